/* template.c — the Jinja subset that chat templates use, rendered the way transformers does.
 *
 * transformers renders `chat_template` with jinja2 (trim_blocks, lstrip_blocks, no autoescape)
 * plus its own `tojson`, `raise_exception` and `strftime_now`. The model only sees the bytes of
 * the rendered prompt, so this file aims at byte-identical output for the templates real models
 * ship, and at a clear error naming anything it does not support — never a silently different
 * prompt.
 *
 * Three stages: the source is cut into segments (text, {{ }}, {% %}, {# #}) applying the
 * whitespace rules; the segments are parsed into a tree of statements holding expression
 * trees; the tree is evaluated against a scope chain. Values (strings, numbers, lists, dicts,
 * namespaces, macros) live in one arena per render and are freed together, so evaluation never
 * frees anything piecemeal. Values print as Python prints them (True, None, 1.0, ['a']).
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "infer/internal.h"

/* ---- arena ------------------------------------------------------------------------------------ */

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    _Alignas(16) char data[];
} arena_block;

typedef struct arena {
    arena_block *head;
} arena;

static void *arena_alloc(arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->used + n > a->head->cap) {
        size_t cap = n > 65536 ? n : 65536;
        arena_block *b = malloc(sizeof *b + cap);
        if (!b)
            abort();
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

static void arena_free(arena *a)
{
    while (a->head) {
        arena_block *n = a->head->next;
        free(a->head);
        a->head = n;
    }
}

static char *arena_strndup(arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ---- values ------------------------------------------------------------------------------------- */

typedef enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_MACRO, V_BUILTIN } vkind;

typedef struct value value;
typedef struct node node;

struct value {
    vkind kind;
    bool b;
    int64_t i;
    double f;
    const char *s;
    size_t n;                 /* string length, list/dict length */
    value **items;            /* list items, dict values */
    value **keys;             /* dict keys (strings) */
    size_t cap;
    bool is_namespace;
    const node *macro;
    const char *builtin;
};

static value UNDEF = {.kind = V_UNDEF}, NONE = {.kind = V_NONE};

typedef struct render render;

static value *v_new(render *r, vkind k);
static value *v_str(render *r, const char *s, size_t n);
static value *v_int(render *r, int64_t i);
static value *v_bool(render *r, bool b);

/* ---- syntax tree ----------------------------------------------------------------------------------- */

typedef enum {
    E_LIT, E_NAME, E_ATTR, E_ITEM, E_SLICE, E_CALL, E_FILTER, E_TEST, E_NOT, E_NEG, E_BIN, E_COND,
    E_LIST, E_DICT, E_AND, E_OR
} ekind;

typedef struct expr expr;
struct expr {
    ekind kind;
    value *lit;
    const char *name;       /* E_NAME, E_ATTR, E_FILTER, E_TEST, E_BIN operator */
    expr *a, *b, *c;
    expr **args;            /* call/filter/test args; list items; dict k,v pairs; slice parts */
    const char **kw;        /* keyword names per arg (NULL = positional) */
    size_t nargs;
    bool negate;
};

typedef enum { N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_BREAK, N_CONTINUE, N_BLOCK } nkind;

struct node {
    nkind kind;
    const char *text;
    size_t len;
    expr *e, *cond;
    const char *target[4];  /* N_FOR loop vars / N_SET name / N_MACRO name */
    size_t ntarget;
    const char *attr;       /* N_SET ns.attr */
    node **body, **orelse;
    size_t nbody, nelse;
    const char **params;    /* N_MACRO */
    expr **defaults;
    size_t nparams;
};

/* ---- segments: cutting the source with the whitespace rules -------------------------------------- */

typedef enum { S_TEXT, S_EXPR, S_STMT } skind;
typedef struct segment {
    skind kind;
    const char *s;
    size_t n;
    int line;
} segment;

struct render {
    arena a;
    err *e;
    bool failed;
    segment *seg;
    size_t nseg, pos;
    /* expression tokens of the current tag */
    const char *tp, *tend;
    buf *out;
    struct scope *scope, *globals;
    int depth;
    int nest;    /* parser recursion: nested expressions and blocks (bounded: a template is input) */
    int edepth;  /* evaluation recursion (a long chain of operators is a deep tree) */
    bool brk, cont;
};

/* Bounds on recursion, far above what real templates use, far below the stack's end. */
enum { MAX_NEST = 200, MAX_EVAL_DEPTH = 2000 };

static int fail(render *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(render *r, const char *fmt, ...)
{
    if (!r->failed) {
        char msg[400];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        err_set(r->e, 422, "TemplateError", "chat template: %s", msg);
    }
    r->failed = true;
    return -1;
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static void push_seg(render *r, size_t *cap, skind k, const char *s, size_t n, int line)
{
    if (r->nseg == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        segment *ns = arena_alloc(&r->a, *cap * sizeof *ns);
        if (r->nseg)
            memcpy(ns, r->seg, r->nseg * sizeof *ns);
        r->seg = ns;
    }
    r->seg[r->nseg++] = (segment){k, s, n, line};
}

static int cut_segments(render *r, const char *src, size_t len)
{
    size_t cap = 0, i = 0, text_start = 0;
    bool strip_next = false, trim_newline = false;
    int line = 1;
    while (i <= len) {
        const char *open = NULL;
        size_t j = i;
        for (; j + 1 < len; j++)
            if (src[j] == '{' && (src[j + 1] == '{' || src[j + 1] == '%' || src[j + 1] == '#')) {
                open = src + j;
                break;
            }
        size_t text_end = open ? j : len;
        /* the text before the tag */
        size_t ts = text_start, te = text_end;
        if (strip_next)
            while (ts < te && is_ws(src[ts]))
                ts++;
        else if (trim_newline && ts < te && src[ts] == '\n')
            ts++;
        else if (trim_newline && ts + 1 < te && src[ts] == '\r' && src[ts + 1] == '\n')
            ts += 2;
        if (open) {
            char kind = open[1];
            bool minus = j + 2 < len && open[2] == '-', plus = j + 2 < len && open[2] == '+';
            if (minus) {
                while (te > ts && is_ws(src[te - 1]))
                    te--;
            } else if (kind != '{' && !plus) {
                /* lstrip_blocks: spaces and tabs from the line start up to a block tag */
                size_t k = te;
                while (k > ts && (src[k - 1] == ' ' || src[k - 1] == '\t'))
                    k--;
                if ((k == 0 || src[k - 1] == '\n') && k >= ts)
                    te = k;
            }
            if (te > ts)
                push_seg(r, &cap, S_TEXT, src + ts, te - ts, line);
            for (size_t q = text_start; q < text_end; q++)
                line += src[q] == '\n';
            const char *close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
            size_t body = j + 2 + (minus || plus ? 1 : 0), k = body;
            if (kind == '#') {
                while (k + 1 < len && !(src[k] == '#' && src[k + 1] == '}'))
                    k++;
            } else {
                /* find the close outside string literals */
                char quote = 0;
                for (; k + 1 < len; k++) {
                    if (quote) {
                        if (src[k] == '\\')
                            k++;
                        else if (src[k] == quote)
                            quote = 0;
                    } else if (src[k] == '\'' || src[k] == '"') {
                        quote = src[k];
                    } else if (src[k] == close[0] && src[k + 1] == close[1]) {
                        break;
                    }
                }
            }
            if (k + 1 >= len)
                return fail(r, "line %d: unclosed %c%c tag", line, '{', kind);
            size_t body_end = k;
            bool rminus = body_end > body && src[body_end - 1] == '-';
            if (rminus)
                body_end--;
            if (kind != '#')
                push_seg(r, &cap, kind == '{' ? S_EXPR : S_STMT, src + body, body_end - body, line);
            for (size_t q = j; q < k; q++)
                line += src[q] == '\n';
            strip_next = rminus;
            trim_newline = kind != '{';   /* trim_blocks: block tags and comments */
            i = text_start = k + 2;
        } else {
            if (te > ts)
                push_seg(r, &cap, S_TEXT, src + ts, te - ts, line);
            break;
        }
    }
    return 0;
}

/* ---- expression tokens ------------------------------------------------------------------------------ */

typedef enum { T_END, T_NAME, T_STR, T_INT, T_FLOAT, T_OP } tkind;
typedef struct token {
    tkind kind;
    const char *s;
    size_t n;
} token;

static token peek_tok(render *r)
{
    const char *p = r->tp;
    while (p < r->tend && is_ws(*p))
        p++;
    token t = {T_END, p, 0};
    if (p >= r->tend)
        return t;
    char c = *p;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
        const char *q = p;
        while (q < r->tend && ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || *q == '_' ||
                               (*q >= '0' && *q <= '9')))
            q++;
        return (token){T_NAME, p, (size_t)(q - p)};
    }
    if (c >= '0' && c <= '9') {
        const char *q = p;
        bool flt = false;
        while (q < r->tend && ((*q >= '0' && *q <= '9') || *q == '_' ||
                               (*q == '.' && q + 1 < r->tend && q[1] >= '0' && q[1] <= '9' && !flt)))
            flt |= *q++ == '.';
        return (token){flt ? T_FLOAT : T_INT, p, (size_t)(q - p)};
    }
    if (c == '\'' || c == '"') {
        const char *q = p + 1;
        while (q < r->tend && *q != c)
            q += *q == '\\' ? 2 : 1;
        return (token){T_STR, p, (size_t)(q + 1 - p)};
    }
    static const char *ops[] = {"==", "!=", "<=", ">=", "//", "**"};
    for (size_t i = 0; i < ARRAY_LEN(ops); i++)
        if (p + 1 < r->tend && p[0] == ops[i][0] && p[1] == ops[i][1])
            return (token){T_OP, p, 2};
    return (token){T_OP, p, 1};
}

static token next_tok(render *r)
{
    token t = peek_tok(r);
    r->tp = t.s + t.n;
    return t;
}

static bool tok_is(token t, const char *s) { return t.n == strlen(s) && !memcmp(t.s, s, t.n) && t.kind != T_STR; }

static bool accept(render *r, const char *s)
{
    if (tok_is(peek_tok(r), s)) {
        next_tok(r);
        return true;
    }
    return false;
}

static bool expect(render *r, const char *s)
{
    token t = next_tok(r);
    if (!tok_is(t, s)) {
        fail(r, "expected '%s' but found '%.*s'", s, (int)t.n, t.s);
        return false;
    }
    return true;
}

static const char *tok_name(render *r, token t) { return arena_strndup(&r->a, t.s, t.n); }

static value *parse_string_literal(render *r, token t)
{
    buf b = BUF_INIT;
    for (size_t i = 1; i + 1 < t.n; i++) {
        char c = t.s[i];
        if (c != '\\') {
            buf_putc(&b, c);
            continue;
        }
        c = t.s[++i];
        switch (c) {
        case 'n': buf_putc(&b, '\n'); break;
        case 't': buf_putc(&b, '\t'); break;
        case 'r': buf_putc(&b, '\r'); break;
        case '\\': buf_putc(&b, '\\'); break;
        case '\'': buf_putc(&b, '\''); break;
        case '"': buf_putc(&b, '"'); break;
        case '\n': break;
        default: buf_putc(&b, '\\'); buf_putc(&b, c); break;
        }
    }
    value *v = v_str(r, b.data ? b.data : "", b.len);
    buf_free(&b);
    return v;
}

/* ---- expression parser (Jinja precedence) ---------------------------------------------------------- */

static expr *parse_expr(render *r);
static expr *parse_or(render *r);

static expr *mk(render *r, ekind k)
{
    expr *e = arena_alloc(&r->a, sizeof *e);
    e->kind = k;
    return e;
}

static void add_arg(render *r, expr *e, expr *a, const char *kw)
{
    expr **na = arena_alloc(&r->a, (e->nargs + 1) * sizeof *na);
    const char **nk = arena_alloc(&r->a, (e->nargs + 1) * sizeof *nk);
    if (e->nargs) {
        memcpy(na, e->args, e->nargs * sizeof *na);
        memcpy(nk, e->kw, e->nargs * sizeof *nk);
    }
    na[e->nargs] = a;
    nk[e->nargs] = kw;
    e->args = na;
    e->kw = nk;
    e->nargs++;
}

/* (args) after a call, filter or test; '(' already consumed. */
static void parse_args(render *r, expr *e)
{
    while (!r->failed && !accept(r, ")")) {
        const char *kw = NULL;
        token t = peek_tok(r);
        if (t.kind == T_NAME) {
            const char *save = r->tp;
            next_tok(r);
            if (tok_is(peek_tok(r), "=") ) {
                next_tok(r);
                kw = tok_name(r, t);
            } else {
                r->tp = save;
            }
        }
        add_arg(r, e, parse_expr(r), kw);
        if (!accept(r, ",")) {
            expect(r, ")");
            break;
        }
    }
}

static expr *parse_primary(render *r)
{
    token t = next_tok(r);
    expr *e;
    switch (t.kind) {
    case T_STR:
        e = mk(r, E_LIT);
        e->lit = parse_string_literal(r, t);
        /* adjacent literals concatenate, as in Python */
        while (peek_tok(r).kind == T_STR) {
            value *more = parse_string_literal(r, next_tok(r));
            buf b = BUF_INIT;
            buf_append(&b, e->lit->s, e->lit->n);
            buf_append(&b, more->s, more->n);
            e->lit = v_str(r, b.data, b.len);
            buf_free(&b);
        }
        return e;
    case T_INT:
        e = mk(r, E_LIT);
        e->lit = v_int(r, strtoll(tok_name(r, t), NULL, 10));
        return e;
    case T_FLOAT:
        e = mk(r, E_LIT);
        e->lit = v_new(r, V_FLOAT);
        e->lit->f = strtod(tok_name(r, t), NULL);
        return e;
    case T_NAME:
        e = mk(r, E_LIT);
        if (tok_is(t, "true") || tok_is(t, "True"))
            e->lit = v_bool(r, true);
        else if (tok_is(t, "false") || tok_is(t, "False"))
            e->lit = v_bool(r, false);
        else if (tok_is(t, "none") || tok_is(t, "None"))
            e->lit = &NONE;
        else {
            e->kind = E_NAME;
            e->name = tok_name(r, t);
        }
        return e;
    case T_OP:
        if (tok_is(t, "(")) {
            if (accept(r, ")"))
                return mk(r, E_LIST);   /* empty tuple */
            e = parse_expr(r);
            if (accept(r, ",")) {   /* tuple: treated as a list */
                expr *l = mk(r, E_LIST);
                add_arg(r, l, e, NULL);
                while (!r->failed && !tok_is(peek_tok(r), ")")) {
                    add_arg(r, l, parse_expr(r), NULL);
                    if (!accept(r, ","))
                        break;
                }
                e = l;
            }
            expect(r, ")");
            return e;
        }
        if (tok_is(t, "[")) {
            e = mk(r, E_LIST);
            while (!r->failed && !accept(r, "]")) {
                add_arg(r, e, parse_expr(r), NULL);
                if (!accept(r, ",")) {
                    expect(r, "]");
                    break;
                }
            }
            return e;
        }
        if (tok_is(t, "{")) {
            e = mk(r, E_DICT);
            while (!r->failed && !accept(r, "}")) {
                add_arg(r, e, parse_expr(r), NULL);
                expect(r, ":");
                add_arg(r, e, parse_expr(r), NULL);
                if (!accept(r, ",")) {
                    expect(r, "}");
                    break;
                }
            }
            return e;
        }
        /* fallthrough */
    default:
        fail(r, "unexpected '%.*s' in an expression", (int)t.n, t.s);
        return mk(r, E_LIT);
    }
}

static expr *parse_postfix(render *r, expr *e)
{
    for (;;) {
        if (r->failed)
            return e;
        token t = peek_tok(r);
        if (tok_is(t, ".")) {
            next_tok(r);
            token n = next_tok(r);
            expr *x = mk(r, E_ATTR);
            x->a = e;
            if (n.kind == T_INT) {   /* foo.0 */
                x->kind = E_ITEM;
                x->b = mk(r, E_LIT);
                x->b->lit = v_int(r, strtoll(tok_name(r, n), NULL, 10));
            } else {
                x->name = tok_name(r, n);
            }
            e = x;
        } else if (tok_is(t, "[")) {
            next_tok(r);
            expr *parts[3] = {NULL, NULL, NULL};
            int np = 0;
            bool slice = false;
            while (np < 3) {
                token u = peek_tok(r);
                if (!tok_is(u, ":") && !tok_is(u, "]"))
                    parts[np] = parse_expr(r);
                if (accept(r, ":")) {
                    slice = true;
                    np++;
                    continue;
                }
                break;
            }
            expect(r, "]");
            expr *x = mk(r, slice ? E_SLICE : E_ITEM);
            x->a = e;
            if (slice) {
                for (int i = 0; i < 3; i++)
                    add_arg(r, x, parts[i], NULL);
            } else {
                x->b = parts[0];
                if (!x->b)
                    fail(r, "empty subscript");
            }
            e = x;
        } else if (tok_is(t, "(")) {
            next_tok(r);
            expr *x = mk(r, E_CALL);
            x->a = e;
            parse_args(r, x);
            e = x;
        } else {
            return e;
        }
    }
}

/* Filters and tests bind tighter than any binary operator. */
static expr *parse_filters(render *r, expr *e)
{
    for (;;) {
        if (r->failed)
            return e;
        if (accept(r, "|")) {
            token n = next_tok(r);
            expr *x = mk(r, E_FILTER);
            x->a = e;
            x->name = tok_name(r, n);
            if (accept(r, "("))
                parse_args(r, x);
            e = x;
        } else if (tok_is(peek_tok(r), "is")) {
            next_tok(r);
            expr *x = mk(r, E_TEST);
            x->a = e;
            x->negate = accept(r, "not");
            token n = next_tok(r);
            x->name = tok_name(r, n);
            if (accept(r, "(")) {
                parse_args(r, x);
            } else {
                /* `is sameas none`, `is equalto 3`: one bare argument */
                token u = peek_tok(r);
                if ((u.kind == T_STR || u.kind == T_INT || u.kind == T_FLOAT ||
                     (u.kind == T_NAME && !tok_is(u, "and") && !tok_is(u, "or") && !tok_is(u, "else") &&
                      !tok_is(u, "if") && !tok_is(u, "is") && !tok_is(u, "in") && !tok_is(u, "not"))))
                    add_arg(r, x, parse_postfix(r, parse_primary(r)), NULL);
            }
            e = x;
        } else {
            return e;
        }
    }
}

static bool nest_enter(render *r)
{
    if (++r->nest > MAX_NEST) {
        fail(r, "expressions or blocks nested more than %d deep", MAX_NEST);
        r->nest--;
        return false;
    }
    return true;
}

static expr *parse_unary(render *r)
{
    int negs = 0;   /* a run of signs is read in a loop, not a recursion per sign */
    for (;;) {
        if (accept(r, "-"))
            negs++;
        else if (!accept(r, "+"))
            break;
    }
    expr *e = parse_filters(r, parse_postfix(r, parse_primary(r)));
    while (negs-- > 0) {
        expr *x = mk(r, E_NEG);
        x->a = e;
        e = x;
    }
    return e;
}

static expr *bin(render *r, const char *op, expr *a, expr *b)
{
    expr *x = mk(r, E_BIN);
    x->name = op;
    x->a = a;
    x->b = b;
    return x;
}

static expr *parse_pow(render *r)
{
    expr *e = parse_unary(r);
    while (accept(r, "**"))
        e = bin(r, "**", e, parse_unary(r));
    return e;
}

static expr *parse_mul(render *r)
{
    expr *e = parse_pow(r);
    for (;;) {
        token t = peek_tok(r);
        if (t.kind == T_OP && (tok_is(t, "*") || tok_is(t, "/") || tok_is(t, "//") || tok_is(t, "%"))) {
            next_tok(r);
            e = bin(r, tok_name(r, t), e, parse_pow(r));
        } else {
            return e;
        }
    }
}

static expr *parse_concat(render *r)
{
    expr *e = parse_mul(r);
    while (accept(r, "~"))
        e = bin(r, "~", e, parse_mul(r));
    return e;
}

static expr *parse_add(render *r)
{
    expr *e = parse_concat(r);
    for (;;) {
        token t = peek_tok(r);
        if (t.kind == T_OP && (tok_is(t, "+") || tok_is(t, "-"))) {
            next_tok(r);
            e = bin(r, tok_name(r, t), e, parse_concat(r));
        } else {
            return e;
        }
    }
}

static expr *parse_compare(render *r)
{
    expr *e = parse_add(r);
    for (;;) {
        token t = peek_tok(r);
        if (t.kind == T_OP && (tok_is(t, "==") || tok_is(t, "!=") || tok_is(t, "<") || tok_is(t, ">") ||
                               tok_is(t, "<=") || tok_is(t, ">="))) {
            next_tok(r);
            e = bin(r, tok_name(r, t), e, parse_add(r));
        } else if (tok_is(t, "in")) {
            next_tok(r);
            e = bin(r, "in", e, parse_add(r));
        } else if (tok_is(t, "not")) {
            const char *save = r->tp;
            next_tok(r);
            if (!accept(r, "in")) {
                r->tp = save;
                return e;
            }
            expr *x = mk(r, E_NOT);
            x->a = bin(r, "in", e, parse_add(r));
            e = x;
        } else {
            return e;
        }
    }
}

static expr *parse_not(render *r)
{
    if (accept(r, "not")) {
        if (!nest_enter(r))
            return mk(r, E_LIT);
        expr *x = mk(r, E_NOT);
        x->a = parse_not(r);
        r->nest--;
        return x;
    }
    return parse_compare(r);
}

static expr *parse_and(render *r)
{
    expr *e = parse_not(r);
    while (accept(r, "and")) {
        expr *x = mk(r, E_AND);
        x->a = e;
        x->b = parse_not(r);
        e = x;
    }
    return e;
}

static expr *parse_or(render *r)
{
    expr *e = parse_and(r);
    while (accept(r, "or")) {
        expr *x = mk(r, E_OR);
        x->a = e;
        x->b = parse_and(r);
        e = x;
    }
    return e;
}

static expr *parse_expr(render *r)
{
    if (!nest_enter(r))
        return mk(r, E_LIT);
    expr *e = parse_or(r);
    if (accept(r, "if")) {
        expr *x = mk(r, E_COND);
        x->a = e;
        x->b = parse_or(r);
        if (accept(r, "else"))
            x->c = parse_expr(r);
        e = x;
    }
    r->nest--;
    return e;
}

/* ---- statement parser ------------------------------------------------------------------------------- */

static void tag_begin(render *r, const segment *s)
{
    r->tp = s->s;
    r->tend = s->s + s->n;
}

static bool tag_done(render *r)
{
    if (r->failed)
        return false;
    token t = peek_tok(r);
    if (t.kind != T_END) {
        fail(r, "line %d: unexpected '%.*s'", r->seg[r->pos - 1].line, (int)t.n, t.s);
        return false;
    }
    return true;
}

/* Parses statements until a {% tag %} whose first word is one of `stops`; leaves r->pos on it. */
static node **parse_body(render *r, const char *const *stops, size_t *n);

static node *new_node(render *r, nkind k)
{
    node *n = arena_alloc(&r->a, sizeof *n);
    n->kind = k;
    return n;
}

static const char *stop_word(render *r)
{
    if (r->pos >= r->nseg || r->seg[r->pos].kind != S_STMT)
        return NULL;
    tag_begin(r, &r->seg[r->pos]);
    token t = peek_tok(r);
    return t.kind == T_NAME ? tok_name(r, t) : NULL;
}

static bool expect_end(render *r, const char *word)
{
    const char *w = stop_word(r);
    if (!w || strcmp(w, word)) {
        fail(r, "missing {%% %s %%}", word);
        return false;
    }
    tag_begin(r, &r->seg[r->pos++]);
    next_tok(r);
    if (!strcmp(word, "endmacro") || !strcmp(word, "endset"))
        while (peek_tok(r).kind != T_END)
            next_tok(r);   /* {% endmacro name %} */
    return tag_done(r);
}

static node *parse_if(render *r)
{
    node *n = new_node(r, N_IF);
    n->cond = parse_expr(r);
    if (!tag_done(r))
        return n;
    static const char *const stops[] = {"elif", "else", "endif", NULL};
    n->body = parse_body(r, stops, &n->nbody);
    const char *w = stop_word(r);
    if (w && !strcmp(w, "elif")) {
        tag_begin(r, &r->seg[r->pos++]);
        next_tok(r);
        n->orelse = arena_alloc(&r->a, sizeof *n->orelse);
        n->orelse[0] = parse_if(r);   /* consumes through endif */
        n->nelse = 1;
        return n;
    }
    if (w && !strcmp(w, "else")) {
        tag_begin(r, &r->seg[r->pos++]);
        next_tok(r);
        if (!tag_done(r))
            return n;
        static const char *const stops2[] = {"endif", NULL};
        n->orelse = parse_body(r, stops2, &n->nelse);
    }
    expect_end(r, "endif");
    return n;
}

static node *parse_for(render *r)
{
    node *n = new_node(r, N_FOR);
    do {
        token t = next_tok(r);
        if (t.kind != T_NAME || n->ntarget == 4) {
            fail(r, "bad for-loop target");
            return n;
        }
        n->target[n->ntarget++] = tok_name(r, t);
    } while (accept(r, ","));
    if (!expect(r, "in"))
        return n;
    n->e = parse_or(r);   /* not parse_expr: `if` here filters the loop */
    if (accept(r, "if"))
        n->cond = parse_or(r);
    if (accept(r, "recursive")) {
        fail(r, "recursive for-loops are not supported");
        return n;
    }
    if (!tag_done(r))
        return n;
    static const char *const stops[] = {"else", "endfor", NULL};
    n->body = parse_body(r, stops, &n->nbody);
    const char *w = stop_word(r);
    if (w && !strcmp(w, "else")) {
        tag_begin(r, &r->seg[r->pos++]);
        next_tok(r);
        static const char *const stops2[] = {"endfor", NULL};
        n->orelse = parse_body(r, stops2, &n->nelse);
    }
    expect_end(r, "endfor");
    return n;
}

static node *parse_statement(render *r)
{
    const segment *s = &r->seg[r->pos++];
    tag_begin(r, s);
    token t = next_tok(r);
    if (tok_is(t, "if"))
        return parse_if(r);
    if (tok_is(t, "for"))
        return parse_for(r);
    if (tok_is(t, "set")) {
        token name = next_tok(r);
        if (name.kind != T_NAME) {
            fail(r, "line %d: bad set target", s->line);
            return new_node(r, N_TEXT);
        }
        node *n = new_node(r, N_SET);
        n->target[0] = tok_name(r, name);
        n->ntarget = 1;
        if (accept(r, ".")) {
            n->attr = tok_name(r, next_tok(r));
        } else if (tok_is(peek_tok(r), ",")) {
            while (accept(r, ",") && n->ntarget < 4)
                n->target[n->ntarget++] = tok_name(r, next_tok(r));
        }
        if (peek_tok(r).kind == T_END) {   /* block set */
            n->kind = N_SETBLOCK;
            static const char *const stops[] = {"endset", NULL};
            n->body = parse_body(r, stops, &n->nbody);
            expect_end(r, "endset");
            return n;
        }
        if (!expect(r, "="))
            return n;
        n->e = parse_expr(r);
        if (n->ntarget > 1 && accept(r, ",")) {   /* set a, b = 1, 2 */
            expr *l = mk(r, E_LIST);
            add_arg(r, l, n->e, NULL);
            do
                add_arg(r, l, parse_expr(r), NULL);
            while (accept(r, ","));
            n->e = l;
        }
        tag_done(r);
        return n;
    }
    if (tok_is(t, "macro")) {
        node *n = new_node(r, N_MACRO);
        n->target[0] = tok_name(r, next_tok(r));
        n->ntarget = 1;
        expect(r, "(");
        while (!r->failed && !accept(r, ")")) {
            const char **np = arena_alloc(&r->a, (n->nparams + 1) * sizeof *np);
            expr **nd = arena_alloc(&r->a, (n->nparams + 1) * sizeof *nd);
            if (n->nparams) {
                memcpy(np, n->params, n->nparams * sizeof *np);
                memcpy(nd, n->defaults, n->nparams * sizeof *nd);
            }
            np[n->nparams] = tok_name(r, next_tok(r));
            nd[n->nparams] = accept(r, "=") ? parse_expr(r) : NULL;
            n->params = np;
            n->defaults = nd;
            n->nparams++;
            if (!accept(r, ",")) {
                expect(r, ")");
                break;
            }
        }
        tag_done(r);
        static const char *const stops[] = {"endmacro", NULL};
        n->body = parse_body(r, stops, &n->nbody);
        expect_end(r, "endmacro");
        return n;
    }
    if (tok_is(t, "generation")) {   /* HF marker for assistant masks: render the body */
        tag_done(r);
        node *n = new_node(r, N_BLOCK);
        static const char *const stops[] = {"endgeneration", NULL};
        n->body = parse_body(r, stops, &n->nbody);
        expect_end(r, "endgeneration");
        return n;
    }
    if (tok_is(t, "break") || tok_is(t, "continue")) {
        tag_done(r);
        return new_node(r, tok_is(t, "break") ? N_BREAK : N_CONTINUE);
    }
    fail(r, "line %d: the {%% %.*s %%} statement is not supported", s->line, (int)t.n, t.s);
    return new_node(r, N_TEXT);
}

static node **parse_body_at(render *r, const char *const *stops, size_t *n);

static node **parse_body(render *r, const char *const *stops, size_t *n)
{
    *n = 0;
    if (!nest_enter(r))
        return NULL;
    node **v = parse_body_at(r, stops, n);
    r->nest--;
    return v;
}

static node **parse_body_at(render *r, const char *const *stops, size_t *n)
{
    node **v = NULL;
    size_t cap = 0;
    while (!r->failed && r->pos < r->nseg) {
        const segment *s = &r->seg[r->pos];
        if (s->kind == S_STMT) {
            const char *w = stop_word(r);
            bool stop = false;
            for (size_t i = 0; stops && stops[i] && w; i++)
                stop |= !strcmp(w, stops[i]);
            if (stop)
                return v;
            if (w && (!strncmp(w, "end", 3) || !strcmp(w, "else") || !strcmp(w, "elif"))) {
                fail(r, "line %d: unexpected {%% %s %%}", s->line, w);
                return v;
            }
        }
        node *nd;
        if (s->kind == S_TEXT) {
            nd = new_node(r, N_TEXT);
            nd->text = s->s;
            nd->len = s->n;
            r->pos++;
        } else if (s->kind == S_EXPR) {
            nd = new_node(r, N_OUT);
            tag_begin(r, s);
            r->pos++;
            nd->e = parse_expr(r);
            tag_done(r);
        } else {
            nd = parse_statement(r);
        }
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            node **nv = arena_alloc(&r->a, cap * sizeof *nv);
            if (*n)
                memcpy(nv, v, *n * sizeof *nv);
            v = nv;
        }
        v[(*n)++] = nd;
    }
    if (stops && stops[0] && !r->failed)
        fail(r, "missing {%% %s %%}", stops[0]);
    return v;
}

/* ---- values: constructors, truth, printing -------------------------------------------------------------- */

static value *v_new(render *r, vkind k)
{
    value *v = arena_alloc(&r->a, sizeof *v);
    v->kind = k;
    return v;
}

static value *v_str(render *r, const char *s, size_t n)
{
    value *v = v_new(r, V_STR);
    v->s = arena_strndup(&r->a, s, n);
    v->n = n;
    return v;
}

static value *v_cstr(render *r, const char *s) { return v_str(r, s, strlen(s)); }

static value *v_int(render *r, int64_t i)
{
    value *v = v_new(r, V_INT);
    v->i = i;
    return v;
}

static value *v_float(render *r, double f)
{
    value *v = v_new(r, V_FLOAT);
    v->f = f;
    return v;
}

static value *v_bool(render *r, bool b)
{
    value *v = v_new(r, V_BOOL);
    v->b = b;
    return v;
}

static void list_push(render *r, value *l, value *x)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        value **ni = arena_alloc(&r->a, cap * sizeof *ni);
        value **nk = l->kind == V_DICT ? arena_alloc(&r->a, cap * sizeof *nk) : NULL;
        if (l->n) {
            memcpy(ni, l->items, l->n * sizeof *ni);
            if (nk)
                memcpy(nk, l->keys, l->n * sizeof *nk);
        }
        l->items = ni;
        l->keys = nk;
        l->cap = cap;
    }
    l->items[l->n++] = x;
}

static value *dict_get(const value *d, const char *key, size_t klen)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->keys[i]->n == klen && !memcmp(d->keys[i]->s, key, klen))
            return d->items[i];
    return NULL;
}

static void dict_set(render *r, value *d, value *key, value *val)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->keys[i]->n == key->n && !memcmp(d->keys[i]->s, key->s, key->n)) {
            d->items[i] = val;
            return;
        }
    list_push(r, d, val);
    d->keys[d->n - 1] = key;
}

static bool truthy(const value *v)
{
    switch (v->kind) {
    case V_UNDEF: case V_NONE: return false;
    case V_BOOL: return v->b;
    case V_INT: return v->i != 0;
    case V_FLOAT: return v->f != 0;
    case V_STR: case V_LIST: return v->n > 0;
    case V_DICT: return v->is_namespace || v->n > 0;
    default: return true;
    }
}

static void put_float(buf *out, double f)
{
    if (isnan(f)) {
        buf_puts(out, "nan");
        return;
    }
    if (isinf(f)) {
        buf_puts(out, f > 0 ? "inf" : "-inf");
        return;
    }
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {   /* Python repr: the shortest that round-trips */
        snprintf(tmp, sizeof tmp, "%.*g", prec, f);
        if (strtod(tmp, NULL) == f)
            break;
    }
    /* Python writes 1e+16 as 1e+16 and 100.0 as 100.0 */
    buf_puts(out, tmp);
    if (!strpbrk(tmp, ".eEn"))
        buf_puts(out, ".0");
}

static void py_repr(buf *out, const value *v);

static void py_str(buf *out, const value *v)
{
    switch (v->kind) {
    case V_UNDEF: return;
    case V_NONE: buf_puts(out, "None"); return;
    case V_BOOL: buf_puts(out, v->b ? "True" : "False"); return;
    case V_INT: buf_printf(out, "%lld", (long long)v->i); return;
    case V_FLOAT: put_float(out, v->f); return;
    case V_STR: buf_append(out, v->s, v->n); return;
    default: py_repr(out, v); return;
    }
}

static void py_repr(buf *out, const value *v)
{
    if (v->kind == V_STR) {
        bool has_sq = memchr(v->s, '\'', v->n), has_dq = memchr(v->s, '"', v->n);
        char q = has_sq && !has_dq ? '"' : '\'';
        buf_putc(out, q);
        for (size_t i = 0; i < v->n; i++) {
            char c = v->s[i];
            if (c == q || c == '\\') {
                buf_putc(out, '\\');
                buf_putc(out, c);
            } else if (c == '\n') buf_puts(out, "\\n");
            else if (c == '\t') buf_puts(out, "\\t");
            else if (c == '\r') buf_puts(out, "\\r");
            else if ((unsigned char)c < 0x20 || c == 0x7f) buf_printf(out, "\\x%02x", (unsigned char)c);
            else buf_putc(out, c);
        }
        buf_putc(out, q);
    } else if (v->kind == V_LIST) {
        buf_putc(out, '[');
        for (size_t i = 0; i < v->n; i++) {
            if (i)
                buf_puts(out, ", ");
            py_repr(out, v->items[i]);
        }
        buf_putc(out, ']');
    } else if (v->kind == V_DICT) {
        if (v->is_namespace) {
            buf_puts(out, "<Namespace>");
            return;
        }
        buf_putc(out, '{');
        for (size_t i = 0; i < v->n; i++) {
            if (i)
                buf_puts(out, ", ");
            py_repr(out, v->keys[i]);
            buf_puts(out, ": ");
            py_repr(out, v->items[i]);
        }
        buf_putc(out, '}');
    } else if (v->kind == V_MACRO || v->kind == V_BUILTIN) {
        buf_puts(out, "<function>");
    } else {
        py_str(out, v);
    }
}

/* Python json.dumps(ensure_ascii=False) with transformers' tojson defaults. */
static void to_json(buf *out, const value *v, int indent, int level, bool sort_keys)
{
    switch (v->kind) {
    case V_UNDEF: case V_NONE: buf_puts(out, "null"); return;
    case V_BOOL: buf_puts(out, v->b ? "true" : "false"); return;
    case V_INT: buf_printf(out, "%lld", (long long)v->i); return;
    case V_FLOAT:
        if (isnan(v->f)) buf_puts(out, "NaN");
        else if (isinf(v->f)) buf_puts(out, v->f > 0 ? "Infinity" : "-Infinity");
        else put_float(out, v->f);
        return;
    case V_STR:
        buf_putc(out, '"');
        for (size_t i = 0; i < v->n; i++) {
            unsigned char c = (unsigned char)v->s[i];
            switch (c) {
            case '"': buf_puts(out, "\\\""); break;
            case '\\': buf_puts(out, "\\\\"); break;
            case '\n': buf_puts(out, "\\n"); break;
            case '\r': buf_puts(out, "\\r"); break;
            case '\t': buf_puts(out, "\\t"); break;
            case '\b': buf_puts(out, "\\b"); break;
            case '\f': buf_puts(out, "\\f"); break;
            default:
                if (c < 0x20 || c == 0x7f)
                    buf_printf(out, "\\u%04x", c);
                else
                    buf_putc(out, (char)c);
            }
        }
        buf_putc(out, '"');
        return;
    case V_LIST:
    case V_DICT: {
        bool dict = v->kind == V_DICT;
        if (v->n == 0) {
            buf_puts(out, dict ? "{}" : "[]");
            return;
        }
        buf_putc(out, dict ? '{' : '[');
        size_t *order = malloc(v->n * sizeof *order);
        for (size_t i = 0; i < v->n; i++)
            order[i] = i;
        if (dict && sort_keys)   /* insertion sort by key bytes: dicts here are small */
            for (size_t i = 1; i < v->n; i++)
                for (size_t j = i; j > 0; j--) {
                    const value *a = v->keys[order[j - 1]], *b = v->keys[order[j]];
                    size_t m = a->n < b->n ? a->n : b->n;
                    int c = memcmp(a->s, b->s, m);
                    if (c > 0 || (c == 0 && a->n > b->n)) {
                        size_t t = order[j];
                        order[j] = order[j - 1];
                        order[j - 1] = t;
                    } else {
                        break;
                    }
                }
        for (size_t k = 0; k < v->n; k++) {
            size_t i = order[k];
            if (k)
                buf_puts(out, indent >= 0 ? "," : ", ");
            if (indent >= 0) {
                buf_putc(out, '\n');
                for (int s = 0; s < indent * (level + 1); s++)
                    buf_putc(out, ' ');
            }
            if (dict) {
                to_json(out, v->keys[i], indent, level + 1, sort_keys);
                buf_puts(out, ": ");
            }
            to_json(out, v->items[i], indent, level + 1, sort_keys);
        }
        free(order);
        if (indent >= 0) {
            buf_putc(out, '\n');
            for (int s = 0; s < indent * level; s++)
                buf_putc(out, ' ');
        }
        buf_putc(out, dict ? '}' : ']');
        return;
    }
    default:
        buf_puts(out, "null");
    }
}

static value *from_json(render *r, json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        value *d = v_new(r, V_DICT);
        const char *k;
        json_t *x;
        json_object_foreach(j, k, x) dict_set(r, d, v_cstr(r, k), from_json(r, x));
        return d;
    }
    case JSON_ARRAY: {
        value *l = v_new(r, V_LIST);
        size_t i;
        json_t *x;
        json_array_foreach(j, i, x) list_push(r, l, from_json(r, x));
        return l;
    }
    case JSON_STRING: return v_str(r, json_string_value(j), json_string_length(j));
    case JSON_INTEGER: return v_int(r, json_integer_value(j));
    case JSON_REAL: return v_float(r, json_real_value(j));
    case JSON_TRUE: return v_bool(r, true);
    case JSON_FALSE: return v_bool(r, false);
    default: return &NONE;
    }
}

/* ---- scopes -------------------------------------------------------------------------------------------- */

typedef struct scope {
    value *vars;
    struct scope *parent;
} scope;

static scope *push_scope(render *r, scope *parent)
{
    scope *s = arena_alloc(&r->a, sizeof *s);
    s->vars = v_new(r, V_DICT);
    s->parent = parent;
    return s;
}

static value *lookup(render *r, const char *name)
{
    for (scope *s = r->scope; s; s = s->parent) {
        value *v = dict_get(s->vars, name, strlen(name));
        if (v)
            return v;
    }
    static const char *builtins[] = {"raise_exception", "strftime_now", "namespace", "range", "dict"};
    for (size_t i = 0; i < ARRAY_LEN(builtins); i++)
        if (!strcmp(name, builtins[i])) {
            value *v = v_new(r, V_BUILTIN);
            v->builtin = builtins[i];
            return v;
        }
    return &UNDEF;
}

static void assign(render *r, const char *name, value *v)
{
    dict_set(r, r->scope->vars, v_cstr(r, name), v);
}

/* ---- evaluation ---------------------------------------------------------------------------------------- */

static value *eval(render *r, const expr *e);
static void exec_body(render *r, node *const *body, size_t n);

static const char *kind_name(const value *v)
{
    static const char *names[] = {"undefined", "none", "bool", "int", "float", "string", "list", "dict",
                                  "macro", "function"};
    return names[v->kind];
}

static bool equal(const value *a, const value *b)
{
    bool an = a->kind == V_INT || a->kind == V_FLOAT || a->kind == V_BOOL;
    bool bn = b->kind == V_INT || b->kind == V_FLOAT || b->kind == V_BOOL;
    if (an && bn) {
        double x = a->kind == V_FLOAT ? a->f : a->kind == V_INT ? (double)a->i : a->b;
        double y = b->kind == V_FLOAT ? b->f : b->kind == V_INT ? (double)b->i : b->b;
        return x == y;
    }
    if (a->kind != b->kind)
        return false;   /* jinja2: Undefined equals only Undefined, never None */
    switch (a->kind) {
    case V_STR: return a->n == b->n && !memcmp(a->s, b->s, a->n);
    case V_LIST:
        if (a->n != b->n) return false;
        for (size_t i = 0; i < a->n; i++)
            if (!equal(a->items[i], b->items[i])) return false;
        return true;
    case V_DICT:
        if (a->n != b->n) return false;
        for (size_t i = 0; i < a->n; i++) {
            value *o = dict_get(b, a->keys[i]->s, a->keys[i]->n);
            if (!o || !equal(a->items[i], o)) return false;
        }
        return true;
    default: return a == b;
    }
}

static bool is_num(const value *v) { return v->kind == V_INT || v->kind == V_FLOAT || v->kind == V_BOOL; }
static double num(const value *v) { return v->kind == V_FLOAT ? v->f : v->kind == V_INT ? (double)v->i : v->b; }

static int compare(render *r, const value *a, const value *b)
{
    if (is_num(a) && is_num(b))
        return num(a) < num(b) ? -1 : num(a) > num(b);
    if (a->kind == V_STR && b->kind == V_STR) {
        size_t m = a->n < b->n ? a->n : b->n;
        int c = memcmp(a->s, b->s, m);
        return c ? (c < 0 ? -1 : 1) : (a->n > b->n) - (a->n < b->n);
    }
    fail(r, "cannot compare %s with %s", kind_name(a), kind_name(b));
    return 0;
}

static bool contains(render *r, const value *hay, const value *needle)
{
    if (hay->kind == V_STR) {
        if (needle->kind != V_STR) {
            fail(r, "'in <string>' needs a string on the left");
            return false;
        }
        return needle->n == 0 || memmem(hay->s, hay->n, needle->s, needle->n) != NULL;
    }
    if (hay->kind == V_LIST) {
        for (size_t i = 0; i < hay->n; i++)
            if (equal(hay->items[i], needle))
                return true;
        return false;
    }
    if (hay->kind == V_DICT)
        return needle->kind == V_STR && dict_get(hay, needle->s, needle->n);
    if (hay->kind == V_UNDEF)
        return false;
    fail(r, "'in' on a %s", kind_name(hay));
    return false;
}

static value *to_string(render *r, const value *v)
{
    if (v->kind == V_STR)
        return (value *)v;
    buf b = BUF_INIT;
    py_str(&b, v);
    value *s = v_str(r, b.data ? b.data : "", b.len);
    buf_free(&b);
    return s;
}

static value *binop(render *r, const char *op, value *a, value *b)
{
    if (!strcmp(op, "~")) {
        buf t = BUF_INIT;
        py_str(&t, a);
        py_str(&t, b);
        value *v = v_str(r, t.data ? t.data : "", t.len);
        buf_free(&t);
        return v;
    }
    if (!strcmp(op, "==")) return v_bool(r, equal(a, b));
    if ((a->kind == V_UNDEF || b->kind == V_UNDEF) && strcmp(op, "!=") && strcmp(op, "in"))
        return fail(r, "'%s' on an undefined value", op), &UNDEF;
    if (!strcmp(op, "!=")) return v_bool(r, !equal(a, b));
    if (!strcmp(op, "<")) return v_bool(r, compare(r, a, b) < 0);
    if (!strcmp(op, ">")) return v_bool(r, compare(r, a, b) > 0);
    if (!strcmp(op, "<=")) return v_bool(r, compare(r, a, b) <= 0);
    if (!strcmp(op, ">=")) return v_bool(r, compare(r, a, b) >= 0);
    if (!strcmp(op, "in")) return v_bool(r, contains(r, b, a));
    if (!strcmp(op, "+")) {
        if (a->kind == V_STR && b->kind == V_STR) {
            char *s = arena_alloc(&r->a, a->n + b->n + 1);
            memcpy(s, a->s, a->n);
            memcpy(s + a->n, b->s, b->n);
            value *v = v_new(r, V_STR);
            v->s = s;
            v->n = a->n + b->n;
            return v;
        }
        if (a->kind == V_LIST && b->kind == V_LIST) {
            value *l = v_new(r, V_LIST);
            for (size_t i = 0; i < a->n; i++) list_push(r, l, a->items[i]);
            for (size_t i = 0; i < b->n; i++) list_push(r, l, b->items[i]);
            return l;
        }
    }
    if (!strcmp(op, "*") && ((a->kind == V_STR && b->kind == V_INT) || (a->kind == V_INT && b->kind == V_STR))) {
        const value *s = a->kind == V_STR ? a : b;
        int64_t times = a->kind == V_INT ? a->i : b->i;
        buf t = BUF_INIT;
        for (int64_t i = 0; i < times && i < 100000; i++)
            buf_append(&t, s->s, s->n);
        value *v = v_str(r, t.data ? t.data : "", t.len);
        buf_free(&t);
        return v;
    }
    if (!is_num(a) || !is_num(b)) {
        fail(r, "unsupported operand types for %s: %s and %s", op, kind_name(a), kind_name(b));
        return &UNDEF;
    }
    bool ints = a->kind != V_FLOAT && b->kind != V_FLOAT;
    int64_t x = a->kind == V_INT ? a->i : a->b, y = b->kind == V_INT ? b->i : b->b;
    double fx = num(a), fy = num(b);
    int64_t z;
    bool overflow = false;
    if (ints && (!strcmp(op, "+") || !strcmp(op, "-") || !strcmp(op, "*"))) {
        overflow = op[0] == '+' ? __builtin_add_overflow(x, y, &z)
                 : op[0] == '-' ? __builtin_sub_overflow(x, y, &z)
                                : __builtin_mul_overflow(x, y, &z);
        if (overflow) {
            fail(r, "integer overflow in %s (numbers beyond 64 bits are not supported)", op);
            return &UNDEF;
        }
        return v_int(r, z);
    }
    if (!strcmp(op, "+")) return v_float(r, fx + fy);
    if (!strcmp(op, "-")) return v_float(r, fx - fy);
    if (!strcmp(op, "*")) return v_float(r, fx * fy);
    if (!strcmp(op, "**")) {
        if (!ints || y < 0)
            return v_float(r, pow(fx, fy));
        double p = pow((double)x, (double)y);
        if (!(fabs(p) < 9.2e18)) {
            fail(r, "integer overflow in ** (numbers beyond 64 bits are not supported)");
            return &UNDEF;
        }
        return v_int(r, (int64_t)p);
    }
    if ((ints && y == 0 && strcmp(op, "/")) || fy == 0) {
        fail(r, "division by zero");
        return &UNDEF;
    }
    if (ints && x == INT64_MIN && y == -1 && strcmp(op, "/")) {
        fail(r, "integer overflow in %s (numbers beyond 64 bits are not supported)", op);
        return &UNDEF;
    }
    if (!strcmp(op, "/")) return v_float(r, fx / fy);
    if (!strcmp(op, "//")) {
        if (ints) {
            int64_t q = x / y;
            if ((x % y != 0) && ((x < 0) != (y < 0))) q--;
            return v_int(r, q);
        }
        return v_float(r, floor(fx / fy));
    }
    if (!strcmp(op, "%")) {
        if (ints) {
            int64_t m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) m += y;
            return v_int(r, m);
        }
        double m = fmod(fx, fy);
        if (m != 0 && ((m < 0) != (fy < 0))) m += fy;
        return v_float(r, m);
    }
    fail(r, "operator %s is not supported", op);
    return &UNDEF;
}

static value *get_attr(render *r, value *obj, const char *name, size_t len)
{
    if (obj->kind == V_DICT) {
        value *v = dict_get(obj, name, len);
        return v ? v : &UNDEF;
    }
    return &UNDEF;
}

static value *get_item(render *r, value *obj, value *key)
{
    if (obj->kind == V_DICT) {
        if (key->kind != V_STR)
            key = to_string(r, key);
        value *v = dict_get(obj, key->s, key->n);
        return v ? v : &UNDEF;
    }
    if ((obj->kind == V_LIST || obj->kind == V_STR) && key->kind == V_INT) {
        int64_t i = key->i < 0 ? key->i + (int64_t)obj->n : key->i;
        if (i < 0 || i >= (int64_t)obj->n)
            return &UNDEF;
        return obj->kind == V_LIST ? obj->items[i] : v_str(r, obj->s + i, 1);
    }
    if (obj->kind == V_STR || obj->kind == V_LIST)
        return key->kind == V_STR ? &UNDEF : (fail(r, "bad index"), &UNDEF);
    return &UNDEF;
}

static value *slice(render *r, value *obj, value *start, value *stop, value *step)
{
    if (obj->kind != V_LIST && obj->kind != V_STR) {
        fail(r, "cannot slice a %s", kind_name(obj));
        return &UNDEF;
    }
    int64_t n = (int64_t)obj->n;
    int64_t st = step && step->kind == V_INT ? step->i : 1;
    if (st == 0) {
        fail(r, "slice step cannot be zero");
        return &UNDEF;
    }
    int64_t a, b;
    if (st > 0) {
        a = start && start->kind == V_INT ? start->i : 0;
        b = stop && stop->kind == V_INT ? stop->i : n;
        if (a < 0) a += n;
        if (b < 0) b += n;
        if (a < 0) a = 0;
        if (b > n) b = n;
    } else {
        a = start && start->kind == V_INT ? start->i : n - 1;
        b = stop && stop->kind == V_INT ? stop->i : -n - 1;
        if (a < 0) a += n;
        if (b < 0) b += n;
        if (a >= n) a = n - 1;
        if (b < -1) b = -1;
    }
    value *out = v_new(r, obj->kind == V_LIST ? V_LIST : V_STR);
    buf t = BUF_INIT;
    for (int64_t i = a; st > 0 ? i < b : i > b; i += st) {
        if (obj->kind == V_LIST)
            list_push(r, out, obj->items[i]);
        else
            buf_putc(&t, obj->s[i]);
    }
    if (obj->kind == V_STR) {
        out = v_str(r, t.data ? t.data : "", t.len);
        buf_free(&t);
    }
    return out;
}

/* Arguments evaluated: positional first, keywords by name. */
typedef struct args {
    value *pos[8];
    size_t npos;
    const char *kwname[8];
    value *kw[8];
    size_t nkw;
} args;

static bool eval_args(render *r, const expr *e, args *a)
{
    memset(a, 0, sizeof *a);
    for (size_t i = 0; i < e->nargs; i++) {
        value *v = eval(r, e->args[i]);
        if (e->kw[i]) {
            if (a->nkw == 8)
                return fail(r, "too many keyword arguments"), false;
            a->kwname[a->nkw] = e->kw[i];
            a->kw[a->nkw++] = v;
        } else {
            if (a->npos == 8)
                return fail(r, "too many arguments"), false;
            a->pos[a->npos++] = v;
        }
    }
    return !r->failed;
}

static value *arg(const args *a, size_t i, const char *name)
{
    if (i < a->npos)
        return a->pos[i];
    for (size_t k = 0; name && k < a->nkw; k++)
        if (!strcmp(a->kwname[k], name))
            return a->kw[k];
    return NULL;
}

static value *kwarg(const args *a, const char *name)
{
    for (size_t k = 0; k < a->nkw; k++)
        if (!strcmp(a->kwname[k], name))
            return a->kw[k];
    return NULL;
}

static value *strip_chars(render *r, value *s, value *chars, bool left, bool right)
{
    const char *set = chars && chars->kind == V_STR ? chars->s : NULL;
    size_t setn = set ? chars->n : 0;
    size_t a = 0, b = s->n;
#define IN_SET(c) (set ? memchr(set, (c), setn) != NULL : is_ws(c))
    while (left && a < b && IN_SET(s->s[a]))
        a++;
    while (right && b > a && IN_SET(s->s[b - 1]))
        b--;
#undef IN_SET
    return v_str(r, s->s + a, b - a);
}

static value *str_case(render *r, value *s, int mode)   /* 0 lower, 1 upper, 2 title, 3 capitalize */
{
    value *o = v_str(r, s->s, s->n);
    char *p = (char *)o->s;
    bool start = true;
    for (size_t i = 0; i < o->n; i++) {
        char c = p[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        bool up = mode == 1 || ((mode == 2 || mode == 3) && start && alpha);
        if (mode == 3 && i > 0)
            up = false;
        if (up && c >= 'a' && c <= 'z')
            p[i] = (char)(c - 32);
        else if (!up && mode != 1 && c >= 'A' && c <= 'Z' && !(mode == 2 && start))
            p[i] = (char)(c + 32);
        if (mode == 2)
            start = !alpha;
    }
    return o;
}

static value *str_split(render *r, value *s, value *sep, int64_t maxsplit)
{
    value *l = v_new(r, V_LIST);
    if (!sep || sep->kind != V_STR) {   /* whitespace runs */
        size_t i = 0;
        while (i < s->n) {
            while (i < s->n && is_ws(s->s[i]))
                i++;
            if (i >= s->n)
                break;
            size_t j = i;
            if (maxsplit >= 0 && (int64_t)l->n == maxsplit) {
                size_t end = s->n;
                while (end > i && is_ws(s->s[end - 1]))
                    end--;
                list_push(r, l, v_str(r, s->s + i, end - i));
                break;
            }
            while (j < s->n && !is_ws(s->s[j]))
                j++;
            list_push(r, l, v_str(r, s->s + i, j - i));
            i = j;
        }
        return l;
    }
    if (sep->n == 0) {
        fail(r, "empty separator");
        return l;
    }
    size_t i = 0;
    for (;;) {
        const char *hit = maxsplit >= 0 && (int64_t)l->n == maxsplit
                              ? NULL : memmem(s->s + i, s->n - i, sep->s, sep->n);
        if (!hit) {
            list_push(r, l, v_str(r, s->s + i, s->n - i));
            return l;
        }
        list_push(r, l, v_str(r, s->s + i, (size_t)(hit - (s->s + i))));
        i = (size_t)(hit - s->s) + sep->n;
    }
}

static value *str_replace(render *r, value *s, value *from, value *to, int64_t count)
{
    if (from->kind != V_STR || to->kind != V_STR)
        return fail(r, "replace() needs strings"), &UNDEF;
    buf t = BUF_INIT;
    size_t i = 0;
    int64_t done = 0;
    while (i <= s->n) {
        const char *hit = (count < 0 || done < count) && from->n ? memmem(s->s + i, s->n - i, from->s, from->n) : NULL;
        if (!hit) {
            buf_append(&t, s->s + i, s->n - i);
            break;
        }
        buf_append(&t, s->s + i, (size_t)(hit - (s->s + i)));
        buf_append(&t, to->s, to->n);
        i = (size_t)(hit - s->s) + from->n;
        done++;
    }
    value *v = v_str(r, t.data ? t.data : "", t.len);
    buf_free(&t);
    return v;
}

static value *call_method(render *r, value *obj, const char *m, const args *a)
{
    if (obj->kind == V_STR) {
        if (!strcmp(m, "strip")) return strip_chars(r, obj, arg(a, 0, NULL), true, true);
        if (!strcmp(m, "lstrip")) return strip_chars(r, obj, arg(a, 0, NULL), true, false);
        if (!strcmp(m, "rstrip")) return strip_chars(r, obj, arg(a, 0, NULL), false, true);
        if (!strcmp(m, "lower")) return str_case(r, obj, 0);
        if (!strcmp(m, "upper")) return str_case(r, obj, 1);
        if (!strcmp(m, "title")) return str_case(r, obj, 2);
        if (!strcmp(m, "capitalize")) return str_case(r, obj, 3);
        if (!strcmp(m, "split")) {
            value *mx = arg(a, 1, "maxsplit");
            return str_split(r, obj, arg(a, 0, "sep"), mx && mx->kind == V_INT ? mx->i : -1);
        }
        if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
            value *p = arg(a, 0, NULL);
            if (!p || p->kind != V_STR)
                return fail(r, "%s() needs a string", m), &UNDEF;
            bool ok = p->n <= obj->n && !memcmp(m[0] == 's' ? obj->s : obj->s + obj->n - p->n, p->s, p->n);
            return v_bool(r, ok);
        }
        if (!strcmp(m, "replace")) {
            value *c = arg(a, 2, "count");
            value *f = arg(a, 0, NULL), *t = arg(a, 1, NULL);
            if (!f || !t)
                return fail(r, "replace() needs two arguments"), &UNDEF;
            return str_replace(r, obj, f, t, c && c->kind == V_INT ? c->i : -1);
        }
        if (!strcmp(m, "find") || !strcmp(m, "count")) {
            value *p = arg(a, 0, NULL);
            if (!p || p->kind != V_STR)
                return fail(r, "%s() needs a string", m), &UNDEF;
            if (m[0] == 'f') {
                const char *h = memmem(obj->s, obj->n, p->s, p->n);
                return v_int(r, h ? (int64_t)(h - obj->s) : -1);
            }
            int64_t c = 0;
            for (size_t i = 0; p->n && i + p->n <= obj->n;)
                if (!memcmp(obj->s + i, p->s, p->n)) { c++; i += p->n; } else i++;
            return v_int(r, c);
        }
    }
    if (obj->kind == V_DICT) {
        if (!strcmp(m, "items") || !strcmp(m, "keys") || !strcmp(m, "values")) {
            value *l = v_new(r, V_LIST);
            for (size_t i = 0; i < obj->n; i++) {
                if (m[0] == 'k') list_push(r, l, obj->keys[i]);
                else if (m[0] == 'v') list_push(r, l, obj->items[i]);
                else {
                    value *p = v_new(r, V_LIST);
                    list_push(r, p, obj->keys[i]);
                    list_push(r, p, obj->items[i]);
                    list_push(r, l, p);
                }
            }
            return l;
        }
        if (!strcmp(m, "get")) {
            value *k = arg(a, 0, NULL), *d = arg(a, 1, "default");
            value *v = k ? get_item(r, obj, k) : &UNDEF;
            return v->kind != V_UNDEF ? v : d ? d : &NONE;
        }
    }
    if (obj->kind == V_LIST && !strcmp(m, "append")) {
        value *x = arg(a, 0, NULL);
        if (x)
            list_push(r, obj, x);
        return &NONE;
    }
    fail(r, "method %s.%s() is not supported", kind_name(obj), m);
    return &UNDEF;
}

static value *call_macro(render *r, value *mac, const args *a)
{
    const node *n = mac->macro;
    scope *saved = r->scope;
    r->scope = push_scope(r, r->globals);
    for (size_t i = 0; i < n->nparams; i++) {
        value *v = arg(a, i, n->params[i]);
        if (!v)
            v = n->defaults[i] ? eval(r, n->defaults[i]) : &UNDEF;
        assign(r, n->params[i], v);
    }
    buf *saved_out = r->out, body = BUF_INIT;
    r->out = &body;
    if (++r->depth > 64)
        fail(r, "macro recursion too deep");
    else
        exec_body(r, n->body, n->nbody);
    r->depth--;
    r->out = saved_out;
    r->scope = saved;
    value *v = v_str(r, body.data ? body.data : "", body.len);
    buf_free(&body);
    return v;
}

static value *call_builtin(render *r, const char *name, const args *a)
{
    if (!strcmp(name, "raise_exception")) {
        value *m = arg(a, 0, NULL);
        buf t = BUF_INIT;
        if (m)
            py_str(&t, m);
        fail(r, "%s", t.data ? t.data : "raise_exception");
        buf_free(&t);
        return &UNDEF;
    }
    if (!strcmp(name, "strftime_now")) {
        value *f = arg(a, 0, NULL);
        if (!f || f->kind != V_STR)
            return fail(r, "strftime_now needs a format"), &UNDEF;
        char out[256];
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        size_t n = strftime(out, sizeof out, f->s, &tm);
        return v_str(r, out, n);
    }
    if (!strcmp(name, "namespace") || !strcmp(name, "dict")) {
        value *d = v_new(r, V_DICT);
        d->is_namespace = name[0] == 'n';
        for (size_t i = 0; i < a->npos; i++)   /* namespace(dict) copies the dict */
            if (a->pos[i]->kind == V_DICT)
                for (size_t k = 0; k < a->pos[i]->n; k++)
                    dict_set(r, d, a->pos[i]->keys[k], a->pos[i]->items[k]);
        for (size_t i = 0; i < a->nkw; i++)
            dict_set(r, d, v_cstr(r, a->kwname[i]), a->kw[i]);
        return d;
    }
    if (!strcmp(name, "range")) {
        int64_t start = 0, stop, step = 1;
        if (a->npos == 1 && a->pos[0]->kind == V_INT)
            stop = a->pos[0]->i;
        else if (a->npos >= 2 && a->pos[0]->kind == V_INT && a->pos[1]->kind == V_INT) {
            start = a->pos[0]->i;
            stop = a->pos[1]->i;
            if (a->npos == 3 && a->pos[2]->kind == V_INT)
                step = a->pos[2]->i;
        } else
            return fail(r, "range() needs integers"), &UNDEF;
        if (step == 0)
            return fail(r, "range() step cannot be zero"), &UNDEF;
        value *l = v_new(r, V_LIST);
        for (int64_t i = start; (step > 0 ? i < stop : i > stop) && l->n < 100000; i += step)
            list_push(r, l, v_int(r, i));
        return l;
    }
    return fail(r, "%s() is not supported", name), &UNDEF;
}

static bool run_test(render *r, const char *name, value *v, const args *a)
{
    if (!strcmp(name, "defined")) return v->kind != V_UNDEF;
    if (!strcmp(name, "undefined")) return v->kind == V_UNDEF;
    if (!strcmp(name, "none")) return v->kind == V_NONE;
    if (!strcmp(name, "string")) return v->kind == V_STR;
    if (!strcmp(name, "number")) return v->kind == V_INT || v->kind == V_FLOAT;
    if (!strcmp(name, "integer")) return v->kind == V_INT;
    if (!strcmp(name, "float")) return v->kind == V_FLOAT;
    if (!strcmp(name, "boolean")) return v->kind == V_BOOL;
    if (!strcmp(name, "true")) return v->kind == V_BOOL && v->b;
    if (!strcmp(name, "false")) return v->kind == V_BOOL && !v->b;
    if (!strcmp(name, "mapping")) return v->kind == V_DICT;
    if (!strcmp(name, "iterable")) return v->kind == V_LIST || v->kind == V_DICT || v->kind == V_STR;
    if (!strcmp(name, "sequence")) return v->kind == V_LIST || v->kind == V_DICT || v->kind == V_STR;
    if (!strcmp(name, "callable")) return v->kind == V_MACRO || v->kind == V_BUILTIN;
    if (!strcmp(name, "odd") || !strcmp(name, "even")) {
        if (v->kind != V_INT)
            return fail(r, "'%s' test on a %s", name, kind_name(v)), false;
        return (v->i % 2 != 0) == (name[0] == 'o');
    }
    if (!strcmp(name, "eq") || !strcmp(name, "equalto") || !strcmp(name, "==") || !strcmp(name, "sameas")) {
        value *o = arg(a, 0, NULL);
        return o && equal(v, o);
    }
    if (!strcmp(name, "ne") || !strcmp(name, "!=")) {
        value *o = arg(a, 0, NULL);
        return o && !equal(v, o);
    }
    if (!strcmp(name, "in")) {
        value *o = arg(a, 0, NULL);
        return o && contains(r, o, v);
    }
    if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        if (v->kind != V_STR)
            return false;
        for (size_t i = 0; i < v->n; i++)
            if (name[0] == 'l' ? (v->s[i] >= 'A' && v->s[i] <= 'Z') : (v->s[i] >= 'a' && v->s[i] <= 'z'))
                return false;
        return true;
    }
    fail(r, "the '%s' test is not supported", name);
    return false;
}

static value *as_list(render *r, value *v)
{
    if (v->kind == V_LIST)
        return v;
    value *l = v_new(r, V_LIST);
    if (v->kind == V_DICT)
        for (size_t i = 0; i < v->n; i++)
            list_push(r, l, v->keys[i]);
    else if (v->kind == V_STR)
        for (size_t i = 0; i < v->n;) {   /* characters, not bytes */
            size_t cl = 1;
            unsigned char c = (unsigned char)v->s[i];
            if (c >= 0xF0) cl = 4; else if (c >= 0xE0) cl = 3; else if (c >= 0xC0) cl = 2;
            if (i + cl > v->n) cl = 1;
            list_push(r, l, v_str(r, v->s + i, cl));
            i += cl;
        }
    else if (v->kind != V_UNDEF && v->kind != V_NONE)
        fail(r, "a %s is not iterable", kind_name(v));
    return l;
}

static value *attr_path(render *r, value *item, value *path)
{
    /* map(attribute='a.b') / selectattr('a.b') */
    const char *s = path->s;
    size_t n = path->n;
    while (item->kind != V_UNDEF) {
        const char *dot = memchr(s, '.', n);
        size_t seg = dot ? (size_t)(dot - s) : n;
        item = get_attr(r, item, s, seg);
        if (!dot)
            break;
        s += seg + 1;
        n -= seg + 1;
    }
    return item;
}

static int cmp_for_sort(render *r, value *a, value *b, bool ci)
{
    if (ci && a->kind == V_STR && b->kind == V_STR) {
        value *la = str_case(r, a, 0), *lb = str_case(r, b, 0);
        return compare(r, la, lb);
    }
    return compare(r, a, b);
}

static value *filter(render *r, const char *name, value *v, const args *a)
{
    if (!strcmp(name, "safe") || !strcmp(name, "e") || !strcmp(name, "escape") || !strcmp(name, "forceescape"))
        return name[0] == 's' ? v : (fail(r, "the '%s' filter is not supported (autoescape is off)", name), v);
    if (!strcmp(name, "trim")) {
        if (v->kind != V_STR) v = to_string(r, v);
        return strip_chars(r, v, arg(a, 0, "chars"), true, true);
    }
    if (!strcmp(name, "string")) return to_string(r, v);
    if (!strcmp(name, "lower") || !strcmp(name, "upper") || !strcmp(name, "title") || !strcmp(name, "capitalize"))
        return str_case(r, to_string(r, v), name[0] == 'l' ? 0 : name[0] == 'u' ? 1 : name[0] == 't' ? 2 : 3);
    if (!strcmp(name, "length") || !strcmp(name, "count")) {
        if (v->kind == V_STR) {   /* characters */
            int64_t c = 0;
            for (size_t i = 0; i < v->n; i++)
                c += ((unsigned char)v->s[i] & 0xC0) != 0x80;
            return v_int(r, c);
        }
        if (v->kind == V_LIST || v->kind == V_DICT) return v_int(r, (int64_t)v->n);
        if (v->kind == V_UNDEF) return v_int(r, 0);
        return fail(r, "length of a %s", kind_name(v)), &UNDEF;
    }
    if (!strcmp(name, "tojson")) {
        if (v->kind == V_UNDEF)
            return fail(r, "tojson of an undefined value"), &UNDEF;
        value *ind = arg(a, 0, "indent"), *sk = arg(a, 3, "sort_keys");
        buf t = BUF_INIT;
        to_json(&t, v, ind && ind->kind == V_INT ? (int)ind->i : -1, 0, sk && truthy(sk));
        value *s = v_str(r, t.data ? t.data : "", t.len);
        buf_free(&t);
        return s;
    }
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        value *d = arg(a, 0, "default_value"), *boolean = arg(a, 1, "boolean");
        bool use = boolean && truthy(boolean) ? !truthy(v) : v->kind == V_UNDEF;
        return use ? (d ? d : v_cstr(r, "")) : v;
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        value *l = as_list(r, v);
        return l->n ? l->items[name[0] == 'f' ? 0 : l->n - 1] : &UNDEF;
    }
    if (!strcmp(name, "list")) return as_list(r, v);
    if (!strcmp(name, "join")) {
        value *l = as_list(r, v), *sep = arg(a, 0, "d"), *attr = arg(a, 1, "attribute");
        buf t = BUF_INIT;
        for (size_t i = 0; i < l->n; i++) {
            if (i && sep)
                py_str(&t, sep);
            py_str(&t, attr ? attr_path(r, l->items[i], attr) : l->items[i]);
        }
        value *s = v_str(r, t.data ? t.data : "", t.len);
        buf_free(&t);
        return s;
    }
    if (!strcmp(name, "replace")) {
        value *f = arg(a, 0, "old"), *t = arg(a, 1, "new"), *c = arg(a, 2, "count");
        if (!f || !t)
            return fail(r, "replace needs two arguments"), &UNDEF;
        return str_replace(r, to_string(r, v), f, t, c && c->kind == V_INT ? c->i : -1);
    }
    if (!strcmp(name, "int")) {
        if (v->kind == V_INT) return v;
        if (v->kind == V_FLOAT) return v_int(r, (int64_t)v->f);
        if (v->kind == V_BOOL) return v_int(r, v->b);
        if (v->kind == V_STR) return v_int(r, strtoll(v->s, NULL, 10));
        return v_int(r, 0);
    }
    if (!strcmp(name, "float")) {
        if (is_num(v)) return v_float(r, num(v));
        if (v->kind == V_STR) return v_float(r, strtod(v->s, NULL));
        return v_float(r, 0);
    }
    if (!strcmp(name, "abs")) {
        if (v->kind == V_INT) return v_int(r, v->i < 0 ? -v->i : v->i);
        if (v->kind == V_FLOAT) return v_float(r, fabs(v->f));
        return fail(r, "abs of a %s", kind_name(v)), &UNDEF;
    }
    if (!strcmp(name, "round")) {
        value *p = arg(a, 0, "precision");
        double scale = pow(10, p && p->kind == V_INT ? (double)p->i : 0);
        return v_float(r, round(num(v) * scale) / scale);
    }
    if (!strcmp(name, "items")) return call_method(r, v, "items", a);
    if (!strcmp(name, "reverse")) {
        if (v->kind == V_STR) {
            value *o = v_str(r, v->s, v->n);
            for (size_t i = 0; i < v->n; i++)
                ((char *)o->s)[i] = v->s[v->n - 1 - i];
            return o;
        }
        value *l = as_list(r, v), *o = v_new(r, V_LIST);
        for (size_t i = l->n; i > 0; i--)
            list_push(r, o, l->items[i - 1]);
        return o;
    }
    if (!strcmp(name, "sort") || !strcmp(name, "dictsort")) {
        bool dict = name[0] == 'd';
        value *src = dict ? call_method(r, v, "items", a) : as_list(r, v);
        value *rev = arg(a, dict ? 2 : 0, "reverse"), *cs = arg(a, dict ? 0 : 1, "case_sensitive"),
              *attr = dict ? NULL : arg(a, 2, "attribute");
        bool ci = !(cs && truthy(cs));
        value *o = v_new(r, V_LIST);
        for (size_t i = 0; i < src->n; i++)
            list_push(r, o, src->items[i]);
        for (size_t i = 1; i < o->n && !r->failed; i++)   /* stable insertion sort */
            for (size_t j = i; j > 0; j--) {
                value *x = o->items[j - 1], *y = o->items[j];
                value *kx = dict ? x->items[0] : attr ? attr_path(r, x, attr) : x;
                value *ky = dict ? y->items[0] : attr ? attr_path(r, y, attr) : y;
                int c = cmp_for_sort(r, kx, ky, ci);
                if (rev && truthy(rev) ? c < 0 : c > 0) {
                    o->items[j - 1] = y;
                    o->items[j] = x;
                } else {
                    break;
                }
            }
        return o;
    }
    if (!strcmp(name, "unique")) {
        value *l = as_list(r, v), *o = v_new(r, V_LIST);
        for (size_t i = 0; i < l->n; i++)
            if (!contains(r, o, l->items[i]))
                list_push(r, o, l->items[i]);
        return o;
    }
    if (!strcmp(name, "map")) {
        value *l = as_list(r, v), *o = v_new(r, V_LIST), *attr = kwarg(a, "attribute"),
              *dflt = kwarg(a, "default");
        value *fname = a->npos ? a->pos[0] : NULL;
        for (size_t i = 0; i < l->n && !r->failed; i++) {
            if (attr) {
                value *x = attr_path(r, l->items[i], attr);
                list_push(r, o, x->kind == V_UNDEF && dflt ? dflt : x);
            } else if (fname && fname->kind == V_STR) {
                args rest = *a;
                memmove(rest.pos, rest.pos + 1, (rest.npos - 1) * sizeof *rest.pos);
                rest.npos--;
                list_push(r, o, filter(r, fname->s, l->items[i], &rest));
            } else {
                return fail(r, "map() needs a filter name or attribute="), &UNDEF;
            }
        }
        return o;
    }
    if (!strcmp(name, "select") || !strcmp(name, "reject") || !strcmp(name, "selectattr") ||
        !strcmp(name, "rejectattr")) {
        bool attr = strstr(name, "attr") != NULL, keep = name[0] == 's';
        value *l = as_list(r, v), *o = v_new(r, V_LIST);
        size_t first = attr ? 1 : 0;
        value *an = attr ? arg(a, 0, NULL) : NULL, *test = arg(a, first, NULL);
        args rest = {0};
        for (size_t i = first + 1; i < a->npos; i++)
            rest.pos[rest.npos++] = a->pos[i];
        if (attr && (!an || an->kind != V_STR))
            return fail(r, "%s needs an attribute name", name), &UNDEF;
        for (size_t i = 0; i < l->n && !r->failed; i++) {
            value *x = attr ? attr_path(r, l->items[i], an) : l->items[i];
            bool ok = test && test->kind == V_STR ? run_test(r, test->s, x, &rest) : truthy(x);
            if (ok == keep)
                list_push(r, o, l->items[i]);
        }
        return o;
    }
    if (!strcmp(name, "indent")) {
        value *w = arg(a, 0, "width"), *first = arg(a, 1, "first"), *blank = arg(a, 2, "blank");
        value *s = to_string(r, v);
        buf pad = BUF_INIT, t = BUF_INIT;
        if (w && w->kind == V_STR)
            buf_append(&pad, w->s, w->n);
        else
            for (int64_t i = 0; i < (w && w->kind == V_INT ? w->i : 4); i++)
                buf_putc(&pad, ' ');
        bool line_start = true;
        bool is_first = true;
        for (size_t i = 0; i < s->n; i++) {
            if (line_start) {
                bool empty = s->s[i] == '\n';
                if ((!is_first || (first && truthy(first))) && (!empty || (blank && truthy(blank))))
                    buf_append(&t, pad.data, pad.len);
                line_start = false;
                is_first = false;
            }
            buf_putc(&t, s->s[i]);
            if (s->s[i] == '\n')
                line_start = true;
        }
        value *o = v_str(r, t.data ? t.data : "", t.len);
        buf_free(&pad);
        buf_free(&t);
        return o;
    }
    if (!strcmp(name, "wordcount")) {
        value *l = str_split(r, to_string(r, v), NULL, -1);
        return v_int(r, (int64_t)l->n);
    }
    fail(r, "the '%s' filter is not supported", name);
    return &UNDEF;
}

static value *eval_node(render *r, const expr *e);

static value *eval(render *r, const expr *e)
{
    if (r->failed || !e)
        return &UNDEF;
    if (++r->edepth > MAX_EVAL_DEPTH) {
        fail(r, "an expression more than %d operations deep", MAX_EVAL_DEPTH);
        r->edepth--;
        return &UNDEF;
    }
    value *v = eval_node(r, e);
    r->edepth--;
    return v;
}

static value *eval_node(render *r, const expr *e)
{
    switch (e->kind) {
    case E_LIT: return e->lit;
    case E_NAME: return lookup(r, e->name);
    case E_ATTR: {
        /* jinja2: a missing attribute is Undefined; any attribute of Undefined is an error */
        value *o = eval(r, e->a);
        if (o->kind == V_UNDEF)
            return fail(r, "'%s' of an undefined value", e->name), &UNDEF;
        return get_attr(r, o, e->name, strlen(e->name));
    }
    case E_ITEM: {
        value *o = eval(r, e->a), *k = eval(r, e->b);
        if (o->kind == V_UNDEF)
            return fail(r, "subscript of an undefined value"), &UNDEF;
        return get_item(r, o, k);
    }
    case E_SLICE:
        return slice(r, eval(r, e->a), e->args[0] ? eval(r, e->args[0]) : NULL,
                     e->args[1] ? eval(r, e->args[1]) : NULL, e->args[2] ? eval(r, e->args[2]) : NULL);
    case E_CALL: {
        args a;
        if (e->a->kind == E_ATTR) {   /* method call */
            value *o = eval(r, e->a->a);
            if (!eval_args(r, e, &a))
                return &UNDEF;
            value *f = o->kind == V_DICT ? dict_get(o, e->a->name, strlen(e->a->name)) : NULL;
            if (f && f->kind == V_MACRO)
                return call_macro(r, f, &a);
            if (o->kind == V_UNDEF)
                return fail(r, "'%s' called on an undefined value", e->a->name), &UNDEF;
            return call_method(r, o, e->a->name, &a);
        }
        value *f = eval(r, e->a);
        if (!eval_args(r, e, &a))
            return &UNDEF;
        if (f->kind == V_MACRO)
            return call_macro(r, f, &a);
        if (f->kind == V_BUILTIN)
            return call_builtin(r, f->builtin, &a);
        return fail(r, "%s is not callable", e->a->kind == E_NAME ? e->a->name : "value"), &UNDEF;
    }
    case E_FILTER: {
        value *v = eval(r, e->a);
        args a;
        if (!eval_args(r, e, &a))
            return &UNDEF;
        return filter(r, e->name, v, &a);
    }
    case E_TEST: {
        value *v = eval(r, e->a);
        args a;
        if (!eval_args(r, e, &a))
            return &UNDEF;
        bool ok = run_test(r, e->name, v, &a);
        return v_bool(r, e->negate ? !ok : ok);
    }
    case E_NOT: return v_bool(r, !truthy(eval(r, e->a)));
    case E_NEG: {
        value *v = eval(r, e->a);
        if (v->kind == V_INT) return v_int(r, -v->i);
        if (v->kind == V_FLOAT) return v_float(r, -v->f);
        return fail(r, "cannot negate a %s", kind_name(v)), &UNDEF;
    }
    case E_AND: {
        value *a = eval(r, e->a);
        return truthy(a) ? eval(r, e->b) : a;
    }
    case E_OR: {
        value *a = eval(r, e->a);
        return truthy(a) ? a : eval(r, e->b);
    }
    case E_BIN: return binop(r, e->name, eval(r, e->a), eval(r, e->b));
    case E_COND: return truthy(eval(r, e->b)) ? eval(r, e->a) : e->c ? eval(r, e->c) : &UNDEF;
    case E_LIST: {
        value *l = v_new(r, V_LIST);
        for (size_t i = 0; i < e->nargs; i++)
            list_push(r, l, eval(r, e->args[i]));
        return l;
    }
    case E_DICT: {
        value *d = v_new(r, V_DICT);
        for (size_t i = 0; i + 1 < e->nargs; i += 2)
            dict_set(r, d, to_string(r, eval(r, e->args[i])), eval(r, e->args[i + 1]));
        return d;
    }
    }
    return &UNDEF;
}

/* ---- statements ---------------------------------------------------------------------------------------- */

static void exec_for(render *r, const node *n)
{
    value *seq = eval(r, n->e);
    value *items = seq->kind == V_DICT ? as_list(r, seq) : as_list(r, seq);
    if (r->failed)
        return;
    /* The inline `if` filters before loop.* is computed, as in Jinja. */
    value *kept = items;
    if (n->cond) {
        kept = v_new(r, V_LIST);
        scope *saved = r->scope;
        for (size_t i = 0; i < items->n && !r->failed; i++) {
            r->scope = push_scope(r, saved);
            value *it = items->items[i];
            if (n->ntarget == 1)
                assign(r, n->target[0], it);
            else
                for (size_t t = 0; t < n->ntarget; t++)
                    assign(r, n->target[t], it->kind == V_LIST && t < it->n ? it->items[t] : &UNDEF);
            if (truthy(eval(r, n->cond)))
                list_push(r, kept, it);
            r->scope = saved;
        }
    }
    if (kept->n == 0) {
        exec_body(r, n->orelse, n->nelse);
        return;
    }
    scope *saved = r->scope;
    for (size_t i = 0; i < kept->n && !r->failed; i++) {
        r->scope = push_scope(r, saved);
        value *it = kept->items[i];
        if (n->ntarget == 1) {
            assign(r, n->target[0], it);
        } else {
            if (it->kind != V_LIST || it->n != n->ntarget) {
                fail(r, "cannot unpack a %s into %zu loop variables", kind_name(it), n->ntarget);
                break;
            }
            for (size_t t = 0; t < n->ntarget; t++)
                assign(r, n->target[t], it->items[t]);
        }
        value *loop = v_new(r, V_DICT);
        int64_t len = (int64_t)kept->n, idx = (int64_t)i;
        dict_set(r, loop, v_cstr(r, "index"), v_int(r, idx + 1));
        dict_set(r, loop, v_cstr(r, "index0"), v_int(r, idx));
        dict_set(r, loop, v_cstr(r, "revindex"), v_int(r, len - idx));
        dict_set(r, loop, v_cstr(r, "revindex0"), v_int(r, len - idx - 1));
        dict_set(r, loop, v_cstr(r, "first"), v_bool(r, idx == 0));
        dict_set(r, loop, v_cstr(r, "last"), v_bool(r, idx == len - 1));
        dict_set(r, loop, v_cstr(r, "length"), v_int(r, len));
        dict_set(r, loop, v_cstr(r, "previtem"), i ? kept->items[i - 1] : &UNDEF);
        dict_set(r, loop, v_cstr(r, "nextitem"), i + 1 < kept->n ? kept->items[i + 1] : &UNDEF);
        assign(r, "loop", loop);
        exec_body(r, n->body, n->nbody);
        r->scope = saved;
        r->cont = false;
        if (r->brk) {
            r->brk = false;
            break;
        }
    }
    r->scope = saved;
}

static void exec_body(render *r, node *const *body, size_t count)
{
    for (size_t i = 0; i < count && !r->failed && !r->brk && !r->cont; i++) {
        const node *n = body[i];
        switch (n->kind) {
        case N_TEXT:
            buf_append(r->out, n->text, n->len);
            break;
        case N_OUT:
            py_str(r->out, eval(r, n->e));
            break;
        case N_IF:
            if (truthy(eval(r, n->cond)))
                exec_body(r, n->body, n->nbody);
            else
                exec_body(r, n->orelse, n->nelse);
            break;
        case N_FOR:
            exec_for(r, n);
            break;
        case N_SET: {
            value *v = eval(r, n->e);
            if (n->attr) {
                value *ns = lookup(r, n->target[0]);
                if (ns->kind != V_DICT || !ns->is_namespace) {
                    fail(r, "cannot set '%s.%s': not a namespace", n->target[0], n->attr);
                    break;
                }
                dict_set(r, ns, v_cstr(r, n->attr), v);
            } else if (n->ntarget == 1) {
                assign(r, n->target[0], v);
            } else {
                if (v->kind != V_LIST || v->n != n->ntarget) {
                    fail(r, "cannot unpack into %zu names", n->ntarget);
                    break;
                }
                for (size_t t = 0; t < n->ntarget; t++)
                    assign(r, n->target[t], v->items[t]);
            }
            break;
        }
        case N_SETBLOCK: {
            buf *saved = r->out, body_buf = BUF_INIT;
            r->out = &body_buf;
            exec_body(r, n->body, n->nbody);
            r->out = saved;
            assign(r, n->target[0], v_str(r, body_buf.data ? body_buf.data : "", body_buf.len));
            buf_free(&body_buf);
            break;
        }
        case N_MACRO: {
            value *m = v_new(r, V_MACRO);
            m->macro = n;
            assign(r, n->target[0], m);
            break;
        }
        case N_BLOCK:
            exec_body(r, n->body, n->nbody);
            break;
        case N_BREAK:
            r->brk = true;
            break;
        case N_CONTINUE:
            r->cont = true;
            break;
        }
    }
}

int infer_template_render(const char *tmpl, size_t len, const char *vars_json, buf *out, err *e)
{
    render r = {0};
    r.e = e;
    r.out = out;
    if (cut_segments(&r, tmpl, len) != 0) {
        arena_free(&r.a);
        return -1;
    }
    size_t n;
    node **body = parse_body(&r, NULL, &n);
    if (!r.failed) {
        json_error_t je;
        json_t *vars = json_loads(vars_json ? vars_json : "{}", 0, &je);
        if (!json_is_object(vars)) {
            fail(&r, "variables must be a JSON object");
        } else {
            r.globals = r.scope = push_scope(&r, NULL);
            value *v = from_json(&r, vars);
            for (size_t i = 0; i < v->n; i++)
                dict_set(&r, r.scope->vars, v->keys[i], v->items[i]);
            r.scope = push_scope(&r, r.globals);   /* template-level sets land here */
            r.globals = r.scope;
            exec_body(&r, body, n);
        }
        json_decref(vars);
    }
    arena_free(&r.a);
    return r.failed ? -1 : 0;
}
