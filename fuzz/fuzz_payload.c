/*-------------------------------------------------------------------------
 *
 * fuzz_payload.c
 *	  libFuzzer harness for the payload's parse alone (src/token_payload.c,
 *	  PostgreSQL's JSON parser with our semantic actions): section F of
 *	  fuzz_token.c, without the signing and verifying around it, so that it
 *	  runs thousands of times faster and reaches tens of millions of inputs.
 *
 * Every input is parsed with a checking visitor and without a visitor, and
 * by jansson (duplicate keys refused), and the invariants of fuzz_token.c's
 * fuzz_payload_parse() are checked: what jansson reads as an object, ours
 * accepts with the same shape and the same registered claims; what ours
 * accepts, jansson accepts too unless it holds a real; the event stream is
 * well formed; every string the parser handed over is released.
 *
 * Build and run: `make fuzz-payload [FUZZ_SECONDS=600]`.
 *
 *-------------------------------------------------------------------------
 */
#define FUZZ_PAYLOAD_ONLY
#include "fuzz_token.c"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_payload_parse(data, size);
	arena_flush();
	return 0;
}
