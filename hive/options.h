/* SPDX-License-Identifier: MIT */
#pragma once

#include "hive.h"

/* 1 to run, 0 after --help/--version, -EINVAL (reason printed on stderr). */
int hive_options_parse(int argc, char **argv, struct hive_options *ret);
void hive_options_done(struct hive_options *o);
