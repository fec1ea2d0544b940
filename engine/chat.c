/* SPDX-License-Identifier: MIT */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "macros.h"

/* ---- names and stop strings ------------------------------------------- */

static const char *const format_names[_RBEE_CHAT_FORMAT_MAX] = {
        [RBEE_CHAT_CHATML] = "chatml",
        [RBEE_CHAT_LLAMA2] = "llama2",
        [RBEE_CHAT_LLAMA3] = "llama3",
        [RBEE_CHAT_ZEPHYR] = "zephyr",
        [RBEE_CHAT_PHI3] = "phi3",
        [RBEE_CHAT_MISTRAL_V1] = "mistral-v1",
        [RBEE_CHAT_MISTRAL_V3] = "mistral-v3",
        [RBEE_CHAT_MISTRAL_V7] = "mistral-v7",
        [RBEE_CHAT_MISTRAL_V3_TEKKEN] = "mistral-v3-tekken",
        [RBEE_CHAT_MISTRAL_V0_1] = "mistral-v0.1",
        [RBEE_CHAT_MISTRAL_V0_2] = "mistral-v0.2",
};

static const char *const stop_chatml[] = { "<|im_end|>", "<|im_start|>", "<|endoftext|>", NULL };
static const char *const stop_llama3[] = { "<|eot_id|>", "<|start_header_id|>", "<|end_of_text|>", NULL };
static const char *const stop_zephyr[] = { "</s>", "<|user|>", "<|system|>", NULL };
static const char *const stop_phi3[] = { "<|end|>", "<|endoftext|>", "<|user|>", NULL };
static const char *const stop_inst[] = { "</s>", "[INST]", NULL };

const char *rbee_chat_format_name(enum rbee_chat_format f) {
        if ((unsigned) f >= _RBEE_CHAT_FORMAT_MAX)
                return NULL;
        return format_names[f];
}

int rbee_chat_format_from_name(const char *name, enum rbee_chat_format *ret) {
        if (!name || !ret)
                return -EINVAL;
        for (size_t f = 0; f < _RBEE_CHAT_FORMAT_MAX; f++)
                if (strcmp(name, format_names[f]) == 0) {
                        *ret = (enum rbee_chat_format) f;
                        return 0;
                }
        return -EOPNOTSUPP;
}

const char *const *rbee_chat_stop_strings(enum rbee_chat_format f) {
        switch (f) {
        case RBEE_CHAT_CHATML:
                return stop_chatml;
        case RBEE_CHAT_LLAMA3:
                return stop_llama3;
        case RBEE_CHAT_ZEPHYR:
                return stop_zephyr;
        case RBEE_CHAT_PHI3:
                return stop_phi3;
        case RBEE_CHAT_LLAMA2:
        case RBEE_CHAT_MISTRAL_V1:
        case RBEE_CHAT_MISTRAL_V3:
        case RBEE_CHAT_MISTRAL_V7:
        case RBEE_CHAT_MISTRAL_V3_TEKKEN:
        case RBEE_CHAT_MISTRAL_V0_1:
        case RBEE_CHAT_MISTRAL_V0_2:
                return stop_inst;
        default:
                return NULL;
        }
}

/* ---- detection -------------------------------------------------------- */

static bool has(const char *tmpl, const char *s) {
        return strstr(tmpl, s) != NULL;
}

/* Fixed system prompts that ChatML templates print when the conversation
 * has none. Longest first: one is a prefix of another. */
static const char *const chatml_defaults[] = {
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",  /* Qwen2.5 */
        "You are a helpful assistant.",                                          /* Qwen2 */
        "You are a helpful assistant",                                           /* Qwen1.5 */
};

/* Does the template print "<|im_start|>system\n" text "<|im_end|>" as one
 * literal? The newline may be written as the escape \n or as itself. */
static bool prints_system(const char *tmpl, const char *text) {
        static const char *const heads[] = { "<|im_start|>system\\n", "<|im_start|>system\n" };

        for (size_t h = 0; h < ELEMENTSOF(heads); h++) {
                size_t hl = strlen(heads[h]), tl = strlen(text);

                for (const char *p = strstr(tmpl, heads[h]); p; p = strstr(p + 1, heads[h]))
                        if (strncmp(p + hl, text, tl) == 0 && strncmp(p + hl + tl, "<|im_end|>", 10) == 0)
                                return true;
        }
        return false;
}

static const char *chatml_default_system(const char *tmpl) {
        for (size_t i = 0; i < ELEMENTSOF(chatml_defaults); i++)
                if (prints_system(tmpl, chatml_defaults[i]))
                        return chatml_defaults[i];
        return NULL;
}

#define LLAMA31_PREFIX "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"

int rbee_chat_template_detect(const char *tmpl, struct rbee_chat_template *ret) {
        struct rbee_chat_template t = {};

        if (!ret)
                return -EINVAL;
        if (!tmpl)
                return -ENOENT;

        if (has(tmpl, "<|im_start|>")) {
                /* Phi-4 and SmolVLM use <|im_start|> with other framing */
                if (has(tmpl, "<|im_sep|>") || has(tmpl, "<end_of_utterance>") ||
                    !has(tmpl, "<|im_end|>"))
                        return -EOPNOTSUPP;
                t.format = RBEE_CHAT_CHATML;
                t.default_system = chatml_default_system(tmpl);
        } else if (has(tmpl, "[SYSTEM_PROMPT]")) {
                /* v7 with the Tekken tokenizer (no spaces) is not rendered */
                if (!has(tmpl, "[SYSTEM_PROMPT] "))
                        return -EOPNOTSUPP;
                t.format = RBEE_CHAT_MISTRAL_V7;
        } else if (has(tmpl, "[INST]")) {
                bool v1 = has(tmpl, "' [INST] '") || has(tmpl, "\" [INST] \"");

                if (v1)
                        t.format = RBEE_CHAT_MISTRAL_V1;
                else if (has(tmpl, "[AVAILABLE_TOOLS]"))
                        t.format = has(tmpl, "\"[INST]\"") || has(tmpl, "'[INST]'") ?
                                RBEE_CHAT_MISTRAL_V3_TEKKEN : RBEE_CHAT_MISTRAL_V3;
                else if (has(tmpl, "<<SYS>>"))
                        t.format = RBEE_CHAT_LLAMA2;
                else if (has(tmpl, "eos_token + ' '"))
                        t.format = RBEE_CHAT_MISTRAL_V0_1;
                else
                        t.format = RBEE_CHAT_MISTRAL_V0_2;
        } else if (has(tmpl, "<|start_header_id|>") && has(tmpl, "<|end_header_id|>")) {
                /* OpenChat 3.6 uses Llama 3 tokens with other role names */
                if (has(tmpl, "GPT4 Correct"))
                        return -EOPNOTSUPP;
                t.format = RBEE_CHAT_LLAMA3;
                if (has(tmpl, "Cutting Knowledge Date: December 2023")) {
                        t.system_prefix = LLAMA31_PREFIX;
                        t.default_system = "";
                }
        } else if (has(tmpl, "<|assistant|>") && has(tmpl, "<|end|>"))
                /* Phi-3-small builds "<|" + role + "|>": no literal "<|user|>" */
                t.format = RBEE_CHAT_PHI3;
        else if (has(tmpl, "<|user|>") && has(tmpl, "<|assistant|>") && has(tmpl, "<|system|>") &&
                 (has(tmpl, "eos_token") || has(tmpl, "</s>")))
                t.format = RBEE_CHAT_ZEPHYR;
        else
                return -EOPNOTSUPP;

        *ret = t;
        return 0;
}

int rbee_chat_detect(const char *tmpl, enum rbee_chat_format *ret) {
        struct rbee_chat_template t;
        int r;

        if (!ret)
                return -EINVAL;
        r = rbee_chat_template_detect(tmpl, &t);
        if (r < 0)
                return r;
        *ret = t.format;
        return 0;
}

/* ---- output buffer ---------------------------------------------------- */

/* A growing string with a hard limit; the first error sticks and later
 * appends do nothing, so the renderers need no error checks of their own. */
struct out {
        char *p;
        size_t n, cap;
        int r;
};

static void put(struct out *o, const char *s, size_t len) {
        size_t need;

        if (o->r < 0 || len == 0)
                return;
        if (ADD_OVERFLOW(o->n, len, &need) || need > RBEE_CHAT_MAX_PROMPT) {
                o->r = -E2BIG;
                return;
        }
        if (need + 1 > o->cap) {
                size_t cap = MAX(o->cap * 2, (size_t) 256);
                char *p;

                while (cap < need + 1)
                        cap *= 2;
                cap = MIN(cap, RBEE_CHAT_MAX_PROMPT + 1);
                p = realloc(o->p, cap);
                if (!p) {
                        o->r = -ENOMEM;
                        return;
                }
                o->p = p;
                o->cap = cap;
        }
        memcpy(o->p + o->n, s, len);
        o->n = need;
}

static void puts_(struct out *o, const char *s) {
        if (s)
                put(o, s, strlen(s));
}

/* ---- whitespace as Python's str.strip() sees it ------------------------ */

/* The characters str.isspace() accepts, in UTF-8. Jinja's trim filter and
 * str.strip() both use it. */
static const char *const spaces[] = {
        "\t", "\n", "\v", "\f", "\r", "\x1c", "\x1d", "\x1e", "\x1f", " ",
        "\xc2\x85", "\xc2\xa0", "\xe1\x9a\x80",
        "\xe2\x80\x80", "\xe2\x80\x81", "\xe2\x80\x82", "\xe2\x80\x83", "\xe2\x80\x84",
        "\xe2\x80\x85", "\xe2\x80\x86", "\xe2\x80\x87", "\xe2\x80\x88", "\xe2\x80\x89",
        "\xe2\x80\x8a", "\xe2\x80\xa8", "\xe2\x80\xa9", "\xe2\x80\xaf", "\xe2\x81\x9f",
        "\xe3\x80\x80",
};

static size_t space_at_start(const char *s, size_t len) {
        for (size_t i = 0; i < ELEMENTSOF(spaces); i++) {
                size_t k = strlen(spaces[i]);
                if (k <= len && memcmp(s, spaces[i], k) == 0)
                        return k;
        }
        return 0;
}

/* A match at the end starts at an ASCII or lead byte, so in valid UTF-8 it
 * is a whole character, never the tail of a longer one. */
static size_t space_at_end(const char *s, size_t len) {
        for (size_t i = 0; i < ELEMENTSOF(spaces); i++) {
                size_t k = strlen(spaces[i]);
                if (k <= len && memcmp(s + len - k, spaces[i], k) == 0)
                        return k;
        }
        return 0;
}

struct span {
        const char *s;
        size_t len;
};

static struct span span_of(const char *s) {
        return (struct span) { s, s ? strlen(s) : 0 };
}

static struct span rstrip(struct span x) {
        size_t k;

        while ((k = space_at_end(x.s, x.len)) > 0)
                x.len -= k;
        return x;
}

static struct span strip(struct span x) {
        size_t k;

        while ((k = space_at_start(x.s, x.len)) > 0) {
                x.s += k;
                x.len -= k;
        }
        return rstrip(x);
}

static void put_span(struct out *o, struct span x) {
        put(o, x.s, x.len);
}

/* ---- messages --------------------------------------------------------- */

enum role {
        ROLE_SYSTEM,
        ROLE_USER,
        ROLE_ASSISTANT,
};

static const char *const role_names[] = {
        [ROLE_SYSTEM] = "system",
        [ROLE_USER] = "user",
        [ROLE_ASSISTANT] = "assistant",
};

/* A message as rendered: the template's prefix (Llama 3.1's knowledge date)
 * goes before the content, outside any trimming. */
struct msg {
        enum role role;
        const char *prefix;     /* or NULL */
        const char *content;
};

static int parse_role(const char *s, enum role *ret) {
        for (size_t i = 0; i < ELEMENTSOF(role_names); i++)
                if (strcmp(s, role_names[i]) == 0) {
                        *ret = (enum role) i;
                        return 0;
                }
        return -EINVAL;
}

/* Write the system messages among m[from, to), prefix and content, joined
 * by blank lines. */
static void put_systems(struct out *o, const struct msg *m, size_t from, size_t to) {
        bool first = true;

        for (size_t i = from; i < to; i++) {
                if (m[i].role != ROLE_SYSTEM)
                        continue;
                if (!first)
                        puts_(o, "\n\n");
                puts_(o, m[i].prefix);
                puts_(o, m[i].content);
                first = false;
        }
}

/* ---- renderers -------------------------------------------------------- */

static void render_chatml(struct out *o, const struct msg *m, size_t n, bool add) {
        for (size_t i = 0; i < n; i++) {
                puts_(o, "<|im_start|>");
                puts_(o, role_names[m[i].role]);
                puts_(o, "\n");
                puts_(o, m[i].prefix);
                puts_(o, m[i].content);
                puts_(o, "<|im_end|>\n");
        }
        if (add)
                puts_(o, "<|im_start|>assistant\n");
}

static void render_llama3(struct out *o, const struct msg *m, size_t n, bool add) {
        for (size_t i = 0; i < n; i++) {
                puts_(o, "<|start_header_id|>");
                puts_(o, role_names[m[i].role]);
                puts_(o, "<|end_header_id|>\n\n");
                puts_(o, m[i].prefix);
                put_span(o, strip(span_of(m[i].content)));
                puts_(o, "<|eot_id|>");
        }
        if (add)
                puts_(o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* <|role|>\ncontent END\n: Zephyr (END = </s>) and Phi-3 (END = <|end|>) */
static void render_tagged(struct out *o, const struct msg *m, size_t n, const char *end) {
        for (size_t i = 0; i < n; i++) {
                puts_(o, "<|");
                puts_(o, role_names[m[i].role]);
                puts_(o, "|>\n");
                puts_(o, m[i].prefix);
                puts_(o, m[i].content);
                puts_(o, end);
                puts_(o, "\n");
        }
}

static void render_zephyr(struct out *o, const struct msg *m, size_t n, bool add) {
        render_tagged(o, m, n, "</s>");
        /* the template prints it from inside its message loop */
        if (add && n > 0)
                puts_(o, "<|assistant|>\n");
}

static void render_phi3(struct out *o, const struct msg *m, size_t n, bool add) {
        render_tagged(o, m, n, "<|end|>");
        if (add)
                puts_(o, "<|assistant|>\n");
}

/* Llama-2-chat: every user turn is bos + "[INST] " + strip(content) + " [/INST]"
 * (the first bos left to the tokenizer), every answer " " + strip(answer) +
 * " " + eos. The system block is glued in front of the user text before the
 * strip, so a user text that is all blanks also loses the block's "\n\n". */
static void render_llama2(struct out *o, const struct msg *m, size_t n) {
        bool emitted = false, pending = false;
        size_t pend = 0;

        for (size_t i = 0; i < n; i++) {
                switch (m[i].role) {
                case ROLE_SYSTEM:
                        if (!pending)
                                pend = i;
                        pending = true;
                        break;
                case ROLE_USER:
                        if (emitted)
                                puts_(o, "<s>");
                        puts_(o, "[INST] ");
                        if (pending) {
                                struct span u = rstrip(span_of(m[i].content));

                                puts_(o, "<<SYS>>\n");
                                put_systems(o, m, pend, i);
                                puts_(o, "\n<</SYS>>");
                                if (u.len > 0) {
                                        puts_(o, "\n\n");
                                        put_span(o, u);
                                }
                                pending = false;
                        } else
                                put_span(o, strip(span_of(m[i].content)));
                        puts_(o, " [/INST]");
                        emitted = true;
                        break;
                case ROLE_ASSISTANT:
                        puts_(o, " ");
                        put_span(o, strip(span_of(m[i].content)));
                        puts_(o, " </s>");
                        emitted = true;
                        break;
                }
        }
        /* system messages with no user turn after them: as one with empty text */
        if (pending) {
                if (emitted)
                        puts_(o, "<s>");
                puts_(o, "[INST] <<SYS>>\n");
                put_systems(o, m, pend, n);
                puts_(o, "\n<</SYS>> [/INST]");
        }
}

/* The original Mistral templates (v0.1, v0.2) and the "v1" one share a
 * shape: user turns in [INST] ... [/INST], answers closed by </s>. */
struct inst_style {
        const char *open;       /* before a user turn */
        const char *sys_sep;    /* between system text and user text */
        const char *close;      /* after a user turn */
        const char *answer;     /* before an answer */
        const char *eos;        /* after an answer */
};

static const struct inst_style style_v0_1 = { "[INST] ", "\n", " [/INST]", "", "</s> " };
static const struct inst_style style_v0_2 = { "[INST] ", "\n", " [/INST]", "", "</s>" };
static const struct inst_style style_v1 = { " [INST] ", "\n\n", " [/INST]", " ", "</s>" };

static void render_inst(struct out *o, const struct msg *m, size_t n, const struct inst_style *st) {
        bool pending = false;
        size_t pend = 0;

        for (size_t i = 0; i < n; i++) {
                switch (m[i].role) {
                case ROLE_SYSTEM:
                        if (!pending)
                                pend = i;
                        pending = true;
                        break;
                case ROLE_USER:
                        puts_(o, st->open);
                        if (pending) {
                                put_systems(o, m, pend, i);
                                puts_(o, st->sys_sep);
                                pending = false;
                        }
                        puts_(o, m[i].content);
                        puts_(o, st->close);
                        break;
                case ROLE_ASSISTANT:
                        puts_(o, st->answer);
                        puts_(o, m[i].content);
                        puts_(o, st->eos);
                        break;
                }
        }
        if (pending) {
                puts_(o, st->open);
                put_systems(o, m, pend, n);
                puts_(o, st->sys_sep);
                puts_(o, st->close);
        }
}

/* Mistral v3 (and its Tekken variant): the system message goes in front of
 * the last user message. */
static void render_v3(struct out *o, const struct msg *m, size_t n, bool tekken) {
        const char *open = tekken ? "[INST]" : "[INST] ";
        size_t last_user = n;
        bool systems = false;

        for (size_t i = 0; i < n; i++) {
                if (m[i].role == ROLE_USER)
                        last_user = i;
                systems |= m[i].role == ROLE_SYSTEM;
        }
        for (size_t i = 0; i < n; i++) {
                switch (m[i].role) {
                case ROLE_SYSTEM:
                        break;
                case ROLE_USER:
                        puts_(o, open);
                        if (i == last_user && systems) {
                                put_systems(o, m, 0, n);
                                puts_(o, "\n\n");
                        }
                        puts_(o, m[i].content);
                        puts_(o, "[/INST]");
                        break;
                case ROLE_ASSISTANT:
                        if (tekken)
                                puts_(o, m[i].content);
                        else {
                                puts_(o, " ");
                                put_span(o, strip(span_of(m[i].content)));
                        }
                        puts_(o, "</s>");
                        break;
                }
        }
        /* no user message to carry the system text: one of its own */
        if (systems && last_user == n) {
                puts_(o, open);
                put_systems(o, m, 0, n);
                puts_(o, "\n\n[/INST]");
        }
}

static void render_v7(struct out *o, const struct msg *m, size_t n) {
        for (size_t i = 0; i < n; i++) {
                switch (m[i].role) {
                case ROLE_SYSTEM:
                        puts_(o, "[SYSTEM_PROMPT] ");
                        puts_(o, m[i].prefix);
                        puts_(o, m[i].content);
                        puts_(o, "[/SYSTEM_PROMPT]");
                        break;
                case ROLE_USER:
                        puts_(o, "[INST] ");
                        puts_(o, m[i].content);
                        puts_(o, "[/INST]");
                        break;
                case ROLE_ASSISTANT:
                        puts_(o, " ");
                        puts_(o, m[i].content);
                        puts_(o, "</s>");
                        break;
                }
        }
}

/* ---- apply ------------------------------------------------------------ */

int rbee_chat_template_apply(const struct rbee_chat_template *t,
                             const struct rbee_chat_message *msgs, size_t n,
                             bool add_assistant_prompt, char **ret) {
        _cleanup_(freep) struct msg *m = NULL;
        struct out o = {};
        size_t nm = 0;

        if (!t || !ret || (unsigned) t->format >= _RBEE_CHAT_FORMAT_MAX)
                return -EINVAL;
        if (n > 0 && !msgs)
                return -EINVAL;
        /* every message takes some bytes of framing, so this many cannot fit */
        if (n > RBEE_CHAT_MAX_PROMPT)
                return -E2BIG;

        m = calloc(n + 1, sizeof *m);
        if (!m)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                enum role role;

                if (!msgs[i].role || !msgs[i].content)
                        return -EINVAL;
                if (parse_role(msgs[i].role, &role) < 0)
                        return -EINVAL;
                if (i == 0 && role == ROLE_SYSTEM)
                        m[nm++] = (struct msg) { role, t->system_prefix, msgs[i].content };
                else if (i == 0 && t->default_system) {
                        m[nm++] = (struct msg) { ROLE_SYSTEM, t->system_prefix, t->default_system };
                        m[nm++] = (struct msg) { role, NULL, msgs[i].content };
                } else
                        m[nm++] = (struct msg) { role, NULL, msgs[i].content };
        }

        switch (t->format) {
        case RBEE_CHAT_CHATML:
                render_chatml(&o, m, nm, add_assistant_prompt);
                break;
        case RBEE_CHAT_LLAMA2:
                render_llama2(&o, m, nm);
                break;
        case RBEE_CHAT_LLAMA3:
                render_llama3(&o, m, nm, add_assistant_prompt);
                break;
        case RBEE_CHAT_ZEPHYR:
                render_zephyr(&o, m, nm, add_assistant_prompt);
                break;
        case RBEE_CHAT_PHI3:
                render_phi3(&o, m, nm, add_assistant_prompt);
                break;
        case RBEE_CHAT_MISTRAL_V1:
                render_inst(&o, m, nm, &style_v1);
                break;
        case RBEE_CHAT_MISTRAL_V0_1:
                render_inst(&o, m, nm, &style_v0_1);
                break;
        case RBEE_CHAT_MISTRAL_V0_2:
                render_inst(&o, m, nm, &style_v0_2);
                break;
        case RBEE_CHAT_MISTRAL_V3:
                render_v3(&o, m, nm, false);
                break;
        case RBEE_CHAT_MISTRAL_V3_TEKKEN:
                render_v3(&o, m, nm, true);
                break;
        case RBEE_CHAT_MISTRAL_V7:
                render_v7(&o, m, nm);
                break;
        default:
                return -EINVAL;
        }

        /* an empty prompt still needs its terminator */
        if (o.r >= 0 && !o.p) {
                o.p = malloc(1);
                if (!o.p)
                        o.r = -ENOMEM;
        }
        if (o.r < 0) {
                free(o.p);
                return o.r;
        }
        o.p[o.n] = 0;
        *ret = o.p;
        return 0;
}

int rbee_chat_apply(enum rbee_chat_format f, const struct rbee_chat_message *msgs, size_t n,
                    bool add_assistant_prompt, char **ret) {
        struct rbee_chat_template t = { .format = f };

        return rbee_chat_template_apply(&t, msgs, n, add_assistant_prompt, ret);
}
