#!/usr/bin/env bash
# Writes the seed corpus of the `auth` fuzz target (fuzz/corpus/auth/) from the TEST-ONLY keys in
# src/auth/testdata/, with openssl. Input layout: see fuzz_targets/auth.rs. Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/corpus/auth"
KEYS=../../../src/auth/testdata
SECRET='a test secret of at least 32 bytes!'
b64u() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
hs() { local h p; h=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64u); p=$(printf '%s' "$1" | b64u)
  printf '%s.%s.%s' "$h" "$p" "$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -hmac "$SECRET" -binary | b64u)"; }
rs() { local h p; h=$(printf '%s' '{"alg":"RS256","typ":"JWT"}' | b64u); p=$(printf '%s' "$1" | b64u)
  printf '%s.%s.%s' "$h" "$p" "$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -sign $KEYS/rsa-private.pem -binary | b64u)"; }
seed() { # name offset auth cookie query topics
  printf "\\x$2%s\0%s\0%s\0%s" "$3" "$4" "$5" "$6" > "$1"; }
VALID='{"sub":"user-42","exp":1800000060,"sse":{"subscribe":["user/42","shop/7/*"],"publish":["shop/7/*"]}}'
T=$(hs "$VALID"); R=$(rs "$VALID")
seed hs-header 00 "Bearer $T" "" "" "user/42,shop/7/a"
seed hs-cookie 00 "" "theme=dark; sse_token=$T; x=1" "" "user/42,"
seed hs-query 00 "" "" "$T" "user/42"
seed hs-forbidden 00 "Bearer $T" "" "" "user/42,user/43"
seed hs-expired 7f "Bearer $T" "" "" "user/42"
seed hs-nbf 00 "Bearer $(hs '{"nbf":1800000100,"sse":{"subscribe":["*"]}}')" "" "" "a"
seed hs-aud 00 "Bearer $(hs '{"aud":"x","sse":{"subscribe":["*"]}}')" "" "" "a"
seed hs-badclaims 00 "Bearer $(hs '{"exp":"soon","sse":{"subscribe":"user/42"}}')" "" "" "user/42"
seed rs-header 00 "Bearer $R" "" "" "user/42"
seed rs-cookie 00 "" "sse_token=\"$R\"" "" "shop/7/x"
seed alg-none 00 "Bearer $(printf '%s' '{"alg":"none"}' | b64u).$(printf '%s' "$VALID" | b64u)." "" "" "user/42"
seed shared 00 "Bearer shared" "" "" "news/1"
seed basic-then-cookie 00 "Basic dXNlcjpwdw==" "sse_token=$T" "" "user/42"
seed garbage 00 "Bearer a.b.c" "sse_token=;;==;\"" "a b" "news/x,,*"
seed public 00 "" "" "" "news/today,"
