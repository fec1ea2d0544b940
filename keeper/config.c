/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "strutil.h"

#define CONFIG_FILE_MAX (1024 * 1024)

int keeper_config_path(char **ret) {
        const char *e = getenv("RBEE_CONFIG"), *x = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
        char *p = NULL;
        int r = 0;

        if (e && *e)
                p = strdup(e);
        else if (x && *x == '/')
                r = asprintf(&p, "%s/rbee/hives", x);
        else if (home && *home)
                r = asprintf(&p, "%s/.config/rbee/hives", home);
        else
                return -ENOENT;
        if (r < 0 || !p)
                return -ENOMEM;
        *ret = p;
        return 0;
}

bool keeper_hive_name_valid(const char *s) {
        size_t n = s ? strlen(s) : 0;

        if (n == 0 || n > 64 || !isalnum((unsigned char) s[0]))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isalnum((unsigned char) s[i]) && !strchr("_.-", s[i]))
                        return false;
        return true;
}

bool keeper_hive_url_valid(const char *s) {
        const char *host;

        if (str_startswith(s, "http://"))
                host = s + 7;
        else if (str_startswith(s, "https://"))
                host = s + 8;
        else
                return false;
        if (!*host || *host == '/' || *host == ':')
                return false;
        for (const char *p = s; *p; p++)
                if ((unsigned char) *p <= ' ' || *p == 0x7f)
                        return false;
        return strlen(s) <= 2048;
}

static void entry_done(struct keeper_hive_entry *e) {
        free(e->name);
        free(e->url);
        free(e->api_key_file);
        *e = (struct keeper_hive_entry) {};
}

void keeper_config_done(struct keeper_config *c) {
        for (size_t i = 0; i < c->n_hives; i++)
                entry_done(&c->hives[i]);
        free(c->hives);
        free(c->default_hive);
        free(c->path);
        *c = (struct keeper_config) {};
}

const struct keeper_hive_entry *keeper_config_find(const struct keeper_config *c, const char *name) {
        for (size_t i = 0; i < c->n_hives; i++)
                if (streq(c->hives[i].name, name))
                        return &c->hives[i];
        return NULL;
}

int keeper_config_set(struct keeper_config *c, const char *name, const char *url, const char *api_key_file) {
        struct keeper_hive_entry e = {}, *slot = NULL;

        e.name = strdup(name);
        e.url = strdup(url);
        e.api_key_file = api_key_file ? strdup(api_key_file) : NULL;
        if (!e.name || !e.url || (api_key_file && !e.api_key_file)) {
                entry_done(&e);
                return -ENOMEM;
        }
        for (size_t i = 0; i < c->n_hives; i++)
                if (streq(c->hives[i].name, name))
                        slot = &c->hives[i];
        if (!slot) {
                struct keeper_hive_entry *h;

                if (c->n_hives >= KEEPER_HIVES_MAX) {
                        entry_done(&e);
                        return -E2BIG;
                }
                h = realloc(c->hives, (c->n_hives + 1) * sizeof(*h));
                if (!h) {
                        entry_done(&e);
                        return -ENOMEM;
                }
                c->hives = h;
                slot = &c->hives[c->n_hives++];
                *slot = (struct keeper_hive_entry) {};
        }
        entry_done(slot);
        *slot = e;
        return 0;
}

int keeper_config_remove(struct keeper_config *c, const char *name) {
        for (size_t i = 0; i < c->n_hives; i++)
                if (streq(c->hives[i].name, name)) {
                        entry_done(&c->hives[i]);
                        memmove(c->hives + i, c->hives + i + 1, (c->n_hives - i - 1) * sizeof(*c->hives));
                        c->n_hives--;
                        if (streq(c->default_hive, name)) {
                                free(c->default_hive);
                                c->default_hive = NULL;
                        }
                        return 0;
                }
        return -ENOENT;
}

/* Split off the next blank-separated word; NULL at the end. */
static char *next_word(char **p) {
        char *s = *p, *w;

        while (*s == ' ' || *s == '\t')
                s++;
        if (!*s)
                return NULL;
        w = s;
        while (*s && *s != ' ' && *s != '\t')
                s++;
        if (*s)
                *s++ = 0;
        *p = s;
        return w;
}

static int parse_line(struct keeper_config *c, char *line, char *err, size_t errlen) {
        char *p = line, *kw = next_word(&p), *a, *b, *opt;
        const char *key_file = NULL;

        if (!kw || kw[0] == '#')
                return 0;
        if (streq(kw, "default")) {
                a = next_word(&p);
                if (!a || next_word(&p) || !keeper_hive_name_valid(a)) {
                        snprintf(err, errlen, "expected 'default NAME'");
                        return -EBADMSG;
                }
                free(c->default_hive);
                c->default_hive = strdup(a);
                return c->default_hive ? 0 : -ENOMEM;
        }
        if (!streq(kw, "hive")) {
                snprintf(err, errlen, "unknown keyword '%.32s' (expected 'hive' or 'default')", kw);
                return -EBADMSG;
        }
        a = next_word(&p);
        b = next_word(&p);
        if (!a || !b) {
                snprintf(err, errlen, "expected 'hive NAME URL [api-key-file=PATH]'");
                return -EBADMSG;
        }
        if (!keeper_hive_name_valid(a)) {
                snprintf(err, errlen, "invalid hive name '%.64s'", a);
                return -EBADMSG;
        }
        if (!keeper_hive_url_valid(b)) {
                snprintf(err, errlen, "invalid URL '%.128s' (expected http://HOST:PORT)", b);
                return -EBADMSG;
        }
        while ((opt = next_word(&p))) {
                if (str_startswith(opt, "api-key-file=") && opt[13] == '/')
                        key_file = opt + 13;
                else {
                        snprintf(err, errlen, "unknown option '%.64s' (expected api-key-file=/ABSOLUTE/PATH)", opt);
                        return -EBADMSG;
                }
        }
        if (keeper_config_find(c, a)) {
                snprintf(err, errlen, "hive '%s' is defined twice", a);
                return -EBADMSG;
        }
        return keeper_config_set(c, a, b, key_file);
}

int keeper_config_load(const char *path, struct keeper_config *ret, char *err, size_t errlen) {
        struct keeper_config c = {};
        _cleanup_(fclosep) FILE *f = NULL;
        _cleanup_(freep) char *line = NULL;
        size_t cap = 0, total = 0;
        unsigned lineno = 0;
        ssize_t n;
        int r;

        c.path = strdup(path);
        if (!c.path)
                return -ENOMEM;
        f = fopen(path, "re");
        if (!f) {
                if (errno != ENOENT) {
                        r = -errno;
                        snprintf(err, errlen, "cannot read %s: %s", path, strerror(-r));
                        keeper_config_done(&c);
                        return r;
                }
                *ret = c;
                return 0;
        }
        c.exists = true;
        while ((n = getline(&line, &cap, f)) >= 0) {
                char sub[200] = "";

                lineno++;
                total += (size_t) n;
                if (total > CONFIG_FILE_MAX) {
                        snprintf(err, errlen, "%s is larger than %d bytes", path, CONFIG_FILE_MAX);
                        keeper_config_done(&c);
                        return -E2BIG;
                }
                if (memchr(line, 0, (size_t) n)) {
                        snprintf(err, errlen, "%s:%u: NUL byte", path, lineno);
                        keeper_config_done(&c);
                        return -EBADMSG;
                }
                str_strip_trailing(line);
                r = parse_line(&c, line, sub, sizeof(sub));
                if (r < 0) {
                        snprintf(err, errlen, "%s:%u: %s", path, lineno, sub[0] ? sub : strerror(-r));
                        keeper_config_done(&c);
                        return r;
                }
        }
        if (ferror(f)) {
                snprintf(err, errlen, "cannot read %s", path);
                keeper_config_done(&c);
                return -EIO;
        }
        *ret = c;
        return 0;
}

static int mkdir_parents(const char *path) {
        _cleanup_(freep) char *d = strdup(path);
        char *slash;

        if (!d)
                return -ENOMEM;
        slash = strrchr(d, '/');
        if (!slash || slash == d)
                return 0;
        *slash = 0;
        for (char *p = d + 1; *p; p++)
                if (*p == '/') {
                        *p = 0;
                        if (mkdir(d, 0755) < 0 && errno != EEXIST)
                                return -errno;
                        *p = '/';
                }
        if (mkdir(d, 0700) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

int keeper_config_save(const struct keeper_config *c, char *err, size_t errlen) {
        _cleanup_(freep) char *tmp = NULL;
        _cleanup_(fclosep) FILE *f = NULL;
        int fd, r;

        r = mkdir_parents(c->path);
        if (r < 0) {
                snprintf(err, errlen, "cannot create the directory of %s: %s", c->path, strerror(-r));
                return r;
        }
        if (asprintf(&tmp, "%s.tmp.XXXXXX", c->path) < 0) {
                tmp = NULL;
                return -ENOMEM;
        }
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot write next to %s: %s", c->path, strerror(-r));
                return r;
        }
        f = fdopen(fd, "w");
        if (!f) {
                r = -errno;
                close(fd);
                unlink(tmp);
                return r;
        }
        fprintf(f, "# rbee hives: 'hive NAME URL [api-key-file=PATH]' and 'default NAME'.\n"
                   "# rbee hive add/remove edit this file.\n");
        for (size_t i = 0; i < c->n_hives; i++) {
                fprintf(f, "hive %s %s", c->hives[i].name, c->hives[i].url);
                if (c->hives[i].api_key_file)
                        fprintf(f, " api-key-file=%s", c->hives[i].api_key_file);
                fputc('\n', f);
        }
        if (c->default_hive)
                fprintf(f, "default %s\n", c->default_hive);
        if (fflush(f) != 0 || ferror(f) || fsync(fileno(f)) < 0) {
                r = errno > 0 ? -errno : -EIO;
                snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(-r));
                unlink(tmp);
                return r;
        }
        if (rename(tmp, c->path) < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, c->path, strerror(-r));
                unlink(tmp);
                return r;
        }
        return 0;
}
