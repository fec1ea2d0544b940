/* SPDX-License-Identifier: MIT */
#pragma once

/* Float vector helpers for the attention and norm loops. They are cloned for
 * x86-64-v3 (AVX2/FMA) at build time and the loader picks the clone the CPU
 * runs, so the package stays portable without a global -march. */

float rbee_vec_dot_f32(const float *a, const float *b, int n);
/* y += a * x */
void rbee_vec_axpy_f32(float *y, float a, const float *x, int n);
void rbee_vec_scale_f32(float *y, float a, int n);
/* Sum of squares. */
float rbee_vec_sumsq_f32(const float *x, int n);
