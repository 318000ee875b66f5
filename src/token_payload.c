/*-------------------------------------------------------------------------
 *
 * token_payload.c
 *	  The one parse of an access token's payload: PostgreSQL's own JSON
 *	  parser (common/jsonapi.c), with semantic actions that check what
 *	  the verifier requires and hand every value to a visitor in the same
 *	  pass (the server's builds the claims jsonb from it: see
 *	  jsonb_build_visit() in extension_tokens.c).
 *
 * Strict where the token format is: valid UTF-8 without NUL, no duplicate
 * key in any object, no \u0000, no integer beyond 64 bits, no exponent
 * of 1000 or more, nesting at most TOKEN_PAYLOAD_MAX_DEPTH.  It notes
 * the registered claims at the top level (exp, nbf, iat as integers; sub,
 * session_id, jti, iss, type as strings; aud as a string or an array of
 * them) for check_claims() in token.c, which decides.
 *
 * No database access and no error raised: the strings the parser returns
 * are allocated with palloc (the caller's memory context in a backend,
 * malloc in the fuzzer, which builds this file with FRONTEND defined and
 * links libpgcommon) and kept until token_payload_release(), because the
 * visitor's jsonb points at them until it is flattened.
 *
 *-------------------------------------------------------------------------
 */
#ifdef FRONTEND
#include "postgres_fe.h"
#else
#include "postgres.h"
#endif

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

#include "token.h"

/* The semantic actions' return type changed in PostgreSQL 16. */
#if PG_VERSION_NUM >= 160000
#define SEM_RESULT JsonParseErrorType
#define SEM_DONE(st) return ((st)->failed ? JSON_SEM_ACTION_FAILED : JSON_SUCCESS)
#else
#define SEM_RESULT void
#define SEM_DONE(st) return
#endif

typedef enum PayloadClaim
{
	CLAIM_NONE = 0,
	CLAIM_EXP,
	CLAIM_NBF,
	CLAIM_IAT,
	CLAIM_SUB,
	CLAIM_SID,
	CLAIM_JTI,
	CLAIM_ISS,
	CLAIM_TYPE,
	CLAIM_AUD
} PayloadClaim;

/* A key of an object open, with its length (compared first). */
typedef struct ParsedKey
{
	const char *name;
	size_t		len;
} ParsedKey;

/* An object being parsed: where its keys start in ParseState.keys. */
typedef struct Frame
{
	bool		is_array;
	int			first_key;
} Frame;

typedef struct ParseState
{
	TokenPayload *out;
	const char *audience;
	TokenJsonVisit visit;
	void	   *arg;
	bool		failed;
	int			depth;			/* containers open */
	Frame		frames[TOKEN_PAYLOAD_MAX_DEPTH + 1];
	PayloadClaim field;			/* the top-level member being parsed */
	bool		in_aud_array;	/* inside the top-level "aud" array */
	/* the keys of the objects open, for the duplicate check */
	ParsedKey  *keys;			/* keys_inline, until more are needed */
	int			nkeys;
	int			keys_cap;
	ParsedKey	keys_inline[32];
} ParseState;

/* Keeps `p` until token_payload_release(). */
static void
own(TokenPayload *out, void *p)
{
	if (out->n_owned == out->owned_cap)
	{
		out->owned_cap = out->owned_cap ? out->owned_cap * 2 : 32;
		out->owned = out->owned ? repalloc(out->owned, out->owned_cap * sizeof(void *))
			: palloc(out->owned_cap * sizeof(void *));
	}
	out->owned[out->n_owned++] = p;
}

static PayloadClaim
claim_of(const char *name)
{
	switch (name[0])
	{
		case 'a':
			return strcmp(name, "aud") == 0 ? CLAIM_AUD : CLAIM_NONE;
		case 'e':
			return strcmp(name, "exp") == 0 ? CLAIM_EXP : CLAIM_NONE;
		case 'i':
			if (strcmp(name, "iat") == 0)
				return CLAIM_IAT;
			return strcmp(name, "iss") == 0 ? CLAIM_ISS : CLAIM_NONE;
		case 'j':
			return strcmp(name, "jti") == 0 ? CLAIM_JTI : CLAIM_NONE;
		case 'n':
			return strcmp(name, "nbf") == 0 ? CLAIM_NBF : CLAIM_NONE;
		case 's':
			if (strcmp(name, "sub") == 0)
				return CLAIM_SUB;
			return strcmp(name, "session_id") == 0 ? CLAIM_SID : CLAIM_NONE;
		case 't':
			return strcmp(name, "type") == 0 ? CLAIM_TYPE : CLAIM_NONE;
		default:
			return CLAIM_NONE;
	}
}

/*
 * A JSON number's text (the lexer checked its grammar) as an int64_t;
 * false for a fraction, an exponent or beyond 64 bits.
 */
bool
token_json_integer(const char *text, int64_t *value)
{
	const char *s = text;
	bool		neg = (*s == '-');
	uint64_t	v = 0;
	uint64_t	limit = neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;

	if (neg)
		s++;
	if (*s == '\0')
		return false;
	for (; *s; s++)
	{
		if (*s < '0' || *s > '9')
			return false;
		if (v > (limit - (uint64_t) (*s - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t) (*s - '0');
	}
	*value = neg ? (int64_t) (0 - v) : (int64_t) v;
	return true;
}

/*
 * What jansson refused and a jsonb must not meet (see the top), for a number
 * that is not an integer of 64 bits.
 */
static bool
number_acceptable(const char *text)
{
	const char *e = strpbrk(text, "eE");

	if (e != NULL)
	{
		e++;
		if (*e == '+' || *e == '-')
			e++;
		while (*e == '0')
			e++;
		return strlen(e) <= 3;	/* |exponent| < 1000 */
	}
	/* a fraction; else an integer beyond 64 bits */
	return strchr(text, '.') != NULL;
}

/* Whether the keys of the object that starts at `first` repeat one. */
static bool
keys_repeat(ParseState *st, int first)
{
	for (int i = first; i < st->nkeys; i++)
		for (int j = i + 1; j < st->nkeys; j++)
			if (st->keys[i].len == st->keys[j].len &&
				st->keys[i].name[0] == st->keys[j].name[0] &&	/* "" too: NUL */
				memcmp(st->keys[i].name, st->keys[j].name, st->keys[i].len) == 0)
				return true;
	return false;
}

static bool
in_array(ParseState *st)
{
	return st->depth > 0 && st->frames[st->depth].is_array;
}

static SEM_RESULT
container_start(ParseState *st, bool is_array)
{
	if (st->failed)
		SEM_DONE(st);
	if (st->depth == 0 && is_array)
		st->failed = true;		/* the payload is an object */
	else if (st->depth == TOKEN_PAYLOAD_MAX_DEPTH)
		st->failed = true;
	else
	{
		if (st->visit)
			st->visit(st->arg, is_array ? TJ_ARRAY_START : TJ_OBJECT_START,
					  in_array(st), NULL, 0);
		if (is_array && st->depth == 1 && st->field == CLAIM_AUD)
			st->in_aud_array = true;
		st->depth++;
		st->frames[st->depth].is_array = is_array;
		st->frames[st->depth].first_key = st->nkeys;
	}
	SEM_DONE(st);
}

static SEM_RESULT
container_end(ParseState *st, bool is_array)
{
	if (st->failed)
		SEM_DONE(st);
	/* the parser balances what it reports, and we opened every frame */
	Assert(st->depth > 0 && st->frames[st->depth].is_array == is_array);
	if (!is_array)
	{
		int			first = st->frames[st->depth].first_key;

		if (keys_repeat(st, first))
		{
			st->failed = true;
			SEM_DONE(st);
		}
		st->nkeys = first;
	}
	st->depth--;
	if (st->depth == 1)
		st->in_aud_array = false;
	if (st->visit)
		st->visit(st->arg, is_array ? TJ_ARRAY_END : TJ_OBJECT_END,
				  in_array(st), NULL, 0);
	SEM_DONE(st);
}

static SEM_RESULT
object_start(void *state)
{
	return container_start(state, false);
}

static SEM_RESULT
object_end(void *state)
{
	return container_end(state, false);
}

static SEM_RESULT
array_start(void *state)
{
	return container_start(state, true);
}

static SEM_RESULT
array_end(void *state)
{
	return container_end(state, true);
}

static SEM_RESULT
field_start(void *state, char *fname, bool isnull)
{
	ParseState *st = state;
	size_t		len;

	(void) isnull;
	if (fname != NULL)
		own(st->out, fname);
	if (st->failed)
		SEM_DONE(st);
	len = strlen(fname);
	if (st->nkeys == st->keys_cap)
	{
		ParsedKey  *more = palloc(st->keys_cap * 2 * sizeof(ParsedKey));

		memcpy(more, st->keys, st->nkeys * sizeof(ParsedKey));
		if (st->keys != st->keys_inline)
			pfree(st->keys);
		st->keys = more;
		st->keys_cap *= 2;
	}
	st->keys[st->nkeys].name = fname;
	st->keys[st->nkeys].len = len;
	st->nkeys++;
	if (st->depth == 1)
	{
		st->field = claim_of(fname);
		if (st->field == CLAIM_AUD)
			st->out->has_aud = true;
		else if (st->field == CLAIM_EXP)
			st->out->has_exp = true;
		else if (st->field == CLAIM_NBF)
			st->out->has_nbf = true;
		else if (st->field == CLAIM_IAT)
			st->out->has_iat = true;
	}
	if (st->visit)
		st->visit(st->arg, TJ_KEY, false, fname, len);
	SEM_DONE(st);
}

/*
 * A scalar that is the value of top-level member `claim`; `is_int` says
 * whether it is a number that is an integer of 64 bits, `ival`.
 */
static void
note_claim(ParseState *st, PayloadClaim claim, const char *token, JsonTokenType type,
		   bool is_int, int64_t ival)
{
	TokenPayload *out = st->out;
	const char **str = NULL;

	switch (claim)
	{
		case CLAIM_EXP:
			if ((out->exp_ok = is_int))
				out->exp = ival;
			return;
		case CLAIM_NBF:
			if ((out->nbf_ok = is_int))
				out->nbf = ival;
			return;
		case CLAIM_IAT:
			if ((out->iat_ok = is_int))
				out->iat = ival;
			return;
		case CLAIM_AUD:
			if (type == JSON_TOKEN_STRING && st->audience != NULL &&
				strcmp(token, st->audience) == 0)
				out->aud_matches = true;
			return;
		case CLAIM_SUB:
			str = &out->sub;
			break;
		case CLAIM_SID:
			str = &out->session_id;
			break;
		case CLAIM_JTI:
			str = &out->jti;
			break;
		case CLAIM_ISS:
			str = &out->iss;
			break;
		case CLAIM_TYPE:
			str = &out->type;
			break;
		case CLAIM_NONE:
			return;
	}
	*str = type == JSON_TOKEN_STRING ? token : NULL;
}

static SEM_RESULT
scalar(void *state, char *token, JsonTokenType type)
{
	ParseState *st = state;
	TokenJsonEvent event;
	bool		is_int = false;
	int64_t		ival = 0;

	if (token != NULL)
		own(st->out, token);
	if (st->failed)
		SEM_DONE(st);
	if (st->depth == 0 || token == NULL)
	{
		st->failed = true;		/* a bare scalar is not a payload */
		SEM_DONE(st);
	}
	switch (type)
	{
		case JSON_TOKEN_STRING:
			event = TJ_STRING;
			break;
		case JSON_TOKEN_NUMBER:
			is_int = token_json_integer(token, &ival);
			if (!is_int && !number_acceptable(token))
			{
				st->failed = true;
				SEM_DONE(st);
			}
			event = TJ_NUMBER;
			break;
		case JSON_TOKEN_TRUE:
			event = TJ_TRUE;
			break;
		case JSON_TOKEN_FALSE:
			event = TJ_FALSE;
			break;
		default:
			event = TJ_NULL;
			break;
	}
	if (st->depth == 1)
		note_claim(st, st->field, token, type, is_int, ival);
	else if (st->depth == 2 && st->in_aud_array)
		note_claim(st, CLAIM_AUD, token, type, is_int, ival);
	if (st->visit)
		st->visit(st->arg, event, in_array(st), token, strlen(token));
	SEM_DONE(st);
}

bool
token_payload_parse(const char *json, size_t len, const char *audience,
					TokenJsonVisit visit, void *arg, TokenPayload *out)
{
	ParseState	st;
	JsonSemAction sem;
	JsonParseErrorType result;
	JsonLexContext *lex;
#if PG_VERSION_NUM >= 170000
	JsonLexContext lexbuf;
#endif

	memset(out, 0, sizeof(*out));
	if (len == 0 || len > TOKEN_MAX_LENGTH ||
		pg_encoding_verifymbstr(PG_UTF8, json, (int) len) != (int) len)
		return false;

	/* not the whole of st: its frames are written before they are read */
	st.out = out;
	st.audience = audience;
	st.visit = visit;
	st.arg = arg;
	st.failed = false;
	st.depth = 0;
	st.field = CLAIM_NONE;
	st.in_aud_array = false;
	st.keys = st.keys_inline;
	st.nkeys = 0;
	st.keys_cap = lengthof(st.keys_inline);
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &st;
	sem.object_start = object_start;
	sem.object_end = object_end;
	sem.array_start = array_start;
	sem.array_end = array_end;
	sem.object_field_start = field_start;
	sem.scalar = scalar;

#if PG_VERSION_NUM >= 170000
	lex = makeJsonLexContextCstringLen(&lexbuf, json, len, PG_UTF8, true);
	result = pg_parse_json(lex, &sem);
	freeJsonLexContext(lex);
#else
	lex = makeJsonLexContextCstringLen(unconstify(char *, json), (int) len, PG_UTF8, true);
	result = pg_parse_json(lex, &sem);
	if (lex->strval != NULL)
	{
		pfree(lex->strval->data);
		pfree(lex->strval);
	}
	pfree(lex);
#endif
	if (st.keys != st.keys_inline)
		pfree(st.keys);
	return result == JSON_SUCCESS && !st.failed;
}

void
token_payload_release(TokenPayload *p)
{
	for (int i = 0; i < p->n_owned; i++)
		pfree(p->owned[i]);
	if (p->owned != NULL)
		pfree(p->owned);
	p->owned = NULL;
	p->n_owned = 0;
	p->owned_cap = 0;
}
