/* SPDX-License-Identifier: MIT */
#pragma once

/* What a job's events look like on the wire, per API:
 *   rbee (/v1/inference)  SSE "started", "token"..., then "end" or "error";
 *                         without stream, one JSON object.
 *   OpenAI chat/text      "data: {chunk}" lines, the last one with a
 *                         finish_reason, an optional usage chunk, "data: [DONE]".
 * Called with the job's lock held, from job.c. */

#include <json-c/json.h>

#include "job.h"

int worker_format_started(struct worker_job *j, struct strbuf *out);
int worker_format_token(struct worker_job *j, const char *text, size_t len, struct strbuf *out);
int worker_format_end(struct worker_job *j, struct strbuf *out);
int worker_format_error(struct worker_job *j, struct strbuf *out);

/* The whole answer of a non-streaming request; *ret_status is the HTTP status. */
struct json_object *worker_format_result(struct worker_job *j, unsigned *ret_status);

/* "stop", "length", "cancelled". */
const char *worker_finish_reason(enum rbee_stop_reason r);
