/* SPDX-License-Identifier: MIT */
#pragma once

/* Token sampling: turns one row of logits into a token id.
 *
 * The chain follows llama.cpp's default order:
 *   penalties -> top_k -> top_p -> min_p -> temperature -> softmax -> draw
 * and temperature <= 0 means greedy (argmax after the penalties).
 * top_p and min_p look at the distribution at temperature 1, as in llama.cpp;
 * the temperature only shapes the final draw among the survivors.
 *
 * Ordering and ties: candidates are ordered by logit, highest first, and equal
 * logits by token id, lowest first. Greedy returns the first in that order, and
 * top_k / top_p keep a prefix of it, so results never depend on memory layout.
 *
 * Non-finite logits: NaN counts as -inf. If some logit is +inf, the first +inf
 * token (lowest id) is returned. If every logit is -inf (or NaN), token 0 is
 * returned. In these cases no random number is drawn.
 *
 * Randomness: xoshiro256** seeded through splitmix64, so a fixed seed gives
 * the same random stream on every run and machine. Exactly one number is
 * drawn per rbee_sampler_sample() call that samples (temperature > 0 and some
 * logit finite), however many candidates survive, so the stream stays aligned.
 * (The tokens drawn also depend on expf(), which libm computes to within an
 * ulp; for practical purposes results are reproducible.)
 *
 * A sampler is not thread-safe: use one per sequence. Sampling allocates
 * nothing; all buffers are sized at creation. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* seed value asking for a random seed (getrandom(), else the clock) */
#define RBEE_SAMPLER_SEED_RANDOM UINT64_C(0xFFFFFFFF)
/* largest repeat_last_n window (tokens); bigger windows get -E2BIG */
#define RBEE_SAMPLER_MAX_LAST_N (INT32_C(1) << 22)

struct rbee_sampler_params {
        float temperature;      /* <= 0: greedy (argmax; ties -> lowest id) */
        int32_t top_k;          /* <= 0: off */
        float top_p;            /* >= 1: off; <= 0 keeps only the top token */
        float min_p;            /* <= 0: off; keeps p >= min_p * p_max, in [0, 1] */
        float repeat_penalty;   /* 1: off (llama.cpp semantics: divide positive logits, multiply the others); > 0 */
        int32_t repeat_last_n;  /* window of recent tokens for all penalties; 0 off, -1 whole history */
        float presence_penalty, frequency_penalty; /* 0: off (OpenAI semantics: logit -= count * freq + (count > 0) * presence) */
        uint64_t seed;          /* RBEE_SAMPLER_SEED_RANDOM: random */
};

/* temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1.0 (off),
 * repeat_last_n 64, presence/frequency 0, seed RBEE_SAMPLER_SEED_RANDOM. */
void rbee_sampler_default_params(struct rbee_sampler_params *p);

typedef struct rbee_sampler rbee_sampler;

/* Create a sampler for a vocabulary of n_vocab tokens. Copies *p.
 * Returns 0, or -EINVAL for nonsense (p or ret NULL, n_vocab <= 0, a NaN or
 * infinite float, top_p < 0, min_p outside [0, 1], repeat_penalty <= 0,
 * repeat_last_n < -1), -E2BIG for repeat_last_n > RBEE_SAMPLER_MAX_LAST_N,
 * -ENOMEM. *ret is untouched on failure; the caller owns the result. */
int rbee_sampler_new(const struct rbee_sampler_params *p, int32_t n_vocab, rbee_sampler **ret);

/* Takes NULL, returns NULL. */
rbee_sampler *rbee_sampler_free(rbee_sampler *s);
static inline void rbee_sampler_freep(rbee_sampler **s) {
        if (*s)
                rbee_sampler_free(*s);
}

/* Forget the token history and restart the random stream from the seed the
 * sampler was created with (for a random seed: the same one it drew then). */
void rbee_sampler_reset(rbee_sampler *s);

/* Record a prompt or generated token for the penalties. Tokens outside
 * [0, n_vocab) are ignored. Does nothing when penalties are off. */
void rbee_sampler_accept(rbee_sampler *s, int32_t token);

/* The most candidates rbee_sampler_sample_top() takes. */
#define RBEE_SAMPLER_TOP_MAX 64

/* How many of the first candidates (highest logit first, ties by lowest id)
 * are enough for this sampler to pick the token it would pick from all the
 * logits: 1 for greedy (or top_p <= 0), top_k for top_k sampling with
 * top_k <= RBEE_SAMPLER_TOP_MAX; 0 when it needs every logit (penalties,
 * top_k off or larger). For an engine that can select them where the
 * logits are computed (a GPU) and copy back only those. */
int32_t rbee_sampler_top_needed(const rbee_sampler *s);

/* rbee_sampler_sample() from the first n candidates only: l[i] and id[i]
 * in candidate order (strictly: higher logit first, equal logits by lower
 * id), NaN logits already turned into -inf. Gives the token, and draws the
 * random number, that rbee_sampler_sample() would on the full logits.
 * -EINVAL when rbee_sampler_top_needed() is 0 or more than n, n is over
 * RBEE_SAMPLER_TOP_MAX, or the candidates are not in order. */
int32_t rbee_sampler_sample_top(rbee_sampler *s, const float *l, const int32_t *id, size_t n);

/* Pick a token from n_vocab logits. Never modifies logits; does not record
 * the token (call rbee_sampler_accept() for that). Returns an id in
 * [0, n_vocab). */
int32_t rbee_sampler_sample(rbee_sampler *s, const float *logits);

/* The seed in effect: params.seed, or the one drawn for RBEE_SAMPLER_SEED_RANDOM
 * (pass it back as params.seed to replay a run). */
uint64_t rbee_sampler_seed(const rbee_sampler *s);

int32_t rbee_sampler_n_vocab(const rbee_sampler *s);
