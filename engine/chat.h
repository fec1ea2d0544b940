/* SPDX-License-Identifier: MIT */
#pragma once

/* Chat prompt formats. A model's tokenizer.chat_template (a Jinja program) is
 * recognised by distinctive substrings, never executed; the prompt is then
 * produced by C code that renders what the real template renders for
 * conversations of system, user and assistant messages.
 *
 * Conventions for every format:
 * - The text does NOT start with the BOS token (<s>, <|begin_of_text|>):
 *   templates print bos_token first, but the tokenizer adds BOS itself
 *   (rbee_tokenize(..., add_bos = rbee_vocab_add_bos(v), ...)), and printing
 *   it too would give two. BOS/EOS texts that templates place *between* turns
 *   ("</s><s>" in Llama 2, "</s>" after Mistral answers) are kept.
 * - Control-token texts such as "<|im_start|>" are plain text here: tokenize
 *   the prompt with parse_special = true so they become their token ids.
 *   This means message content could smuggle control tokens in; callers that
 *   take content from untrusted users should decide whether to allow that.
 * - add_assistant_prompt appends the opening of an assistant turn where the
 *   format has one; formats whose user turn already ends in the assistant's
 *   position ([INST] ... [/INST]) have nothing to add.
 * - Where a real template has no place for a system message, it is merged
 *   into the next user message as the llama.cpp family does (documented per
 *   format below), rather than dropped or rejected. Roles need not alternate.
 *
 * All functions are thread-safe (no global state). */

#include <stdbool.h>
#include <stddef.h>

enum rbee_chat_format {
        /* <|im_start|>role\ncontent<|im_end|>\n ... then <|im_start|>assistant\n.
         * Qwen, OpenHermes, Yi, ... */
        RBEE_CHAT_CHATML,
        /* Llama-2-chat: "[INST] <<SYS>>\nsys\n<</SYS>>\n\nuser [/INST] answer </s><s>[INST] user [/INST]".
         * User and answer text are strip()ped as the template does; a system
         * message goes into the <<SYS>> block of the next user turn. */
        RBEE_CHAT_LLAMA2,
        /* Llama 3: <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>,
         * content trim()med. */
        RBEE_CHAT_LLAMA3,
        /* Zephyr / TinyLlama-chat: <|role|>\ncontent</s>\n ... <|assistant|>\n */
        RBEE_CHAT_ZEPHYR,
        /* Phi-3 / Phi-3.5: <|role|>\ncontent<|end|>\n ... <|assistant|>\n. The
         * first Phi-3-mini templates drop system messages; they are kept here
         * as <|system|> turns, as the later Phi-3 and Phi-3.5 templates do. */
        RBEE_CHAT_PHI3,
        /* Mistral's "v1" template (updated Mistral-7B-Instruct-v0.1/v0.2,
         * Mixtral): " [INST] sys\n\nuser [/INST] answer</s> [INST] user [/INST]". */
        RBEE_CHAT_MISTRAL_V1,
        /* Mistral's "v3" template (Mistral-7B-Instruct-v0.3): "[INST] user[/INST] answer</s>",
         * answers trim()med, and the system message goes in front of the
         * LAST user message, as that template does. */
        RBEE_CHAT_MISTRAL_V3,
        /* Mistral's "v7" template (Mistral-Large-2411): "[SYSTEM_PROMPT] sys[/SYSTEM_PROMPT][INST] user[/INST] answer</s>" */
        RBEE_CHAT_MISTRAL_V7,
        /* v3 with the Tekken tokenizer (Mistral-Nemo): "[INST]user[/INST]answer</s>",
         * no spaces, answers not trimmed; system as in v3. */
        RBEE_CHAT_MISTRAL_V3_TEKKEN,
        /* The original Mistral-7B-Instruct-v0.1 template: "[INST] user [/INST]answer</s> "
         * (with a space after </s>). It rejects system messages; here one is
         * put in front of the next user message followed by "\n". */
        RBEE_CHAT_MISTRAL_V0_1,
        /* The original v0.2 / Mixtral-8x7B-Instruct-v0.1 template: as v0.1 without
         * the space after </s>. */
        RBEE_CHAT_MISTRAL_V0_2,
        _RBEE_CHAT_FORMAT_MAX,
};

struct rbee_chat_message {
        const char *role;       /* "system", "user" or "assistant" */
        const char *content;
};

/* What a template prints besides the format's framing. Strings are static
 * (owned by the library) or NULL. */
struct rbee_chat_template {
        enum rbee_chat_format format;
        /* System content used when the conversation does not start with a
         * system message (Qwen2: "You are a helpful assistant."; Qwen2.5:
         * "You are Qwen, created by Alibaba Cloud. You are a helpful
         * assistant."; Llama 3.1: "", i.e. a system turn is always printed).
         * Applies only when there is at least one message. */
        const char *default_system;
        /* Text put in front of the (first) system message's content (Llama
         * 3.1/3.2/3.3: "Cutting Knowledge Date: December 2023\nToday Date:
         * 26 Jul 2024\n\n"; those templates take the date from date_string or
         * strftime_now() and fall back to 26 Jul 2024, which is used here so
         * that prompts are reproducible). */
        const char *system_prefix;
};

/* Recognise a chat template.
 *   -ENOENT      tmpl is NULL (the model has no template)
 *   -EOPNOTSUPP  not a template this library can render
 *   -EINVAL      ret is NULL
 * On success fills *ret, including the default system prompt and the
 * system prefix where the template has them. */
int rbee_chat_template_detect(const char *tmpl, struct rbee_chat_template *ret);

/* Only the format of rbee_chat_template_detect(). */
int rbee_chat_detect(const char *tmpl, enum rbee_chat_format *ret);

/* Format by name, for overrides: "chatml", "llama2", "llama3", "zephyr",
 * "phi3", "mistral-v1", "mistral-v3", "mistral-v3-tekken", "mistral-v7",
 * "mistral-v0.1", "mistral-v0.2". -EINVAL for NULL arguments, -EOPNOTSUPP
 * for an unknown name. */
int rbee_chat_format_from_name(const char *name, enum rbee_chat_format *ret);

/* The name of a format (static string), NULL for an invalid value. */
const char *rbee_chat_format_name(enum rbee_chat_format f);

/* Render a conversation with a template. msgs may be NULL when n is 0.
 * On success *ret is a malloc'd NUL-terminated prompt owned by the caller.
 *   -EINVAL  a NULL role or content, a role other than system/user/assistant,
 *            an invalid format, or NULL ret
 *   -E2BIG   the prompt would exceed 64 MiB
 *   -ENOMEM */
int rbee_chat_template_apply(const struct rbee_chat_template *t,
                             const struct rbee_chat_message *msgs, size_t n,
                             bool add_assistant_prompt, char **ret);

/* The same with only a format (no default system prompt, no prefix). */
int rbee_chat_apply(enum rbee_chat_format f, const struct rbee_chat_message *msgs, size_t n,
                    bool add_assistant_prompt, char **ret);

/* Texts that end an assistant turn in this format (the end-of-turn marker,
 * and the start of a next turn the model might run on into): a static
 * NULL-terminated list, or NULL for an invalid format. Token-level EOG
 * checks (rbee_vocab_is_eog) catch these as tokens; these strings catch them
 * in text, e.g. when the vocabulary lacks them as special tokens. */
const char *const *rbee_chat_stop_strings(enum rbee_chat_format f);

/* Largest prompt rbee_chat_apply() produces. */
#define RBEE_CHAT_MAX_PROMPT ((size_t) 64 << 20)
