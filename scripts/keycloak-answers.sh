#!/usr/bin/env bash
# Record how the real Keycloak answers, as a Markdown transcript on stdout.
# Used to write tests/fixtures/keycloak-answers.md and to check the fake server for drift:
#
#   scripts/keycloak.sh start && scripts/keycloak-answers.sh > /tmp/answers.md
#   scripts/keycloak.sh start      # again: this run changes bob's password
#
# It needs a freshly started server (realm fixture as imported): it resets bob's password,
# creates and deletes users, and pauses/resumes the server once (section i).
# Tokens are replaced by <jwt>; nothing else is masked (ids and session_state vary per run).
# Backticks in single quotes are Markdown code spans, not command substitutions:
# shellcheck disable=SC2016
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
KC="${SCRIPT_DIR}/keycloak.sh"
B="$("${KC}" url)"
R="${B}/realms/resilient-test"
T="${R}/protocol/openid-connect/token"
A="${B}/admin/realms/resilient-test"
JSON='Content-Type: application/json'
WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT

mask() { sed -E 's/eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*/<jwt>/g'; }

# req LABEL CURL-ARGS... : one request, printed as status, chosen headers and body
# (SHOW_BODY=0: body left out, e.g. the 6 KB discovery document).
SHOW_BODY=1
req() {
    local label="$1" code
    shift
    code="$(curl -s -D "${WORK}/h" -o "${WORK}/b" -w '%{http_code}' --max-time 20 "$@" || true)"
    printf -- '- **%s**\n  - status: `%s`\n' "${label}" "${code}"
    grep -i -E '^(content-type|www-authenticate|location|cache-control):' "${WORK}/h" | tr -d '\r' | mask |
        sed -E 's/^/  - header: `/; s/$/`/' || true
    if [[ "${SHOW_BODY}" != 1 ]]; then
        printf '  - body: (%s bytes, not shown)\n' "$(wc -c <"${WORK}/b")"
    elif [[ -s "${WORK}/b" ]]; then
        printf '  - body: `%s`\n' "$(mask <"${WORK}/b")"
    else
        printf '  - body: (empty)\n'
    fi
}

# JWT payload as compact JSON (for documenting claims).
claims() {
    local p
    p="$(cut -d. -f2 <<<"$1" | tr '_-' '/+')"
    while ((${#p} % 4)); do p="${p}="; done
    base64 -d <<<"${p}" | jq -c .
}

pw() { curl -s "${T}" -d grant_type=password -d client_id=webapp -d client_secret=webapp-test-secret \
    --data-urlencode "username=$1" --data-urlencode "password=$2"; }
cc() { curl -s "${T}" -d grant_type=client_credentials -d "client_id=$1" -d "client_secret=$2" | jq -r .access_token; }
user_id() { curl -s -H "Authorization: Bearer ${SYNC}" "${A}/users?username=$1&exact=true" | jq -r '.[0].id'; }

WEBAPP=(-d client_id=webapp -d client_secret=webapp-test-secret)

echo "## a. discovery"
SHOW_BODY=0
req "GET well-known, realm resilient-test" "${R}/.well-known/openid-configuration"
SHOW_BODY=1
printf '  - keys: `%s`\n' "$(jq -c '{issuer,token_endpoint,grant_types_supported}' "${WORK}/b")"
req "GET well-known, unknown realm nope" "${B}/realms/nope/.well-known/openid-configuration"

echo
echo "## b. password grant (client webapp unless said)"
req "alice, right password" "${T}" -d grant_type=password "${WEBAPP[@]}" -d username=alice -d password=Alice-Password-1
printf '  - keys: `%s`\n' "$(jq -c 'keys' "${WORK}/b")"
printf '  - access-token claims: `%s`\n' "$(claims "$(jq -r .access_token "${WORK}/b")")"
req "alice, wrong password" "${T}" -d grant_type=password "${WEBAPP[@]}" -d username=alice -d password=Wrong-Password-0
req "unknown user zed" "${T}" -d grant_type=password "${WEBAPP[@]}" -d username=zed -d password=Zed-Password-1
req "disabled carol, right password" "${T}" -d grant_type=password "${WEBAPP[@]}" -d username=carol -d password=Carol-Password-1
req "disabled carol, wrong password" "${T}" -d grant_type=password "${WEBAPP[@]}" -d username=carol -d password=Wrong-Password-0
req "ALICE (upper case), right password" "${T}" -d grant_type=password "${WEBAPP[@]}" -d username=ALICE -d password=Alice-Password-1
req "alice@example.test (email as username)" "${T}" -d grant_type=password "${WEBAPP[@]}" -d username=alice@example.test -d password=Alice-Password-1
req "wrong client secret" "${T}" -d grant_type=password -d client_id=webapp -d client_secret=bad -d username=alice -d password=Alice-Password-1
req "no client secret" "${T}" -d grant_type=password -d client_id=webapp -d username=alice -d password=Alice-Password-1
req "client secret via HTTP Basic" -u webapp:webapp-test-secret "${T}" -d grant_type=password -d username=alice -d password=Alice-Password-1
req "client no-direct-grants" "${T}" -d grant_type=password -d client_id=no-direct-grants -d client_secret=no-direct-test-secret -d username=alice -d password=Alice-Password-1
req "unknown client ghost" "${T}" -d grant_type=password -d client_id=ghost -d client_secret=x -d username=alice -d password=Alice-Password-1
req "unknown realm nope" "${B}/realms/nope/protocol/openid-connect/token" -d grant_type=password "${WEBAPP[@]}" -d username=alice -d password=Alice-Password-1
req "missing password parameter" "${T}" -d grant_type=password "${WEBAPP[@]}" -d username=alice
req "empty password" "${T}" -d grant_type=password "${WEBAPP[@]}" -d username=alice -d password=
req "missing username parameter" "${T}" -d grant_type=password "${WEBAPP[@]}" -d password=Alice-Password-1
req "missing grant_type" "${T}" "${WEBAPP[@]}"
req "grant_type=foo" "${T}" -d grant_type=foo "${WEBAPP[@]}"
req "GET on token endpoint" "${T}"

echo
echo "## c. refresh_token grant"
LOGIN="$(pw alice Alice-Password-1)"
RT="$(jq -r .refresh_token <<<"${LOGIN}")"
req "good refresh token" "${T}" -d grant_type=refresh_token "${WEBAPP[@]}" -d "refresh_token=${RT}"
req "same refresh token used a second time" "${T}" -d grant_type=refresh_token "${WEBAPP[@]}" -d "refresh_token=${RT}"
req "garbage refresh token" "${T}" -d grant_type=refresh_token "${WEBAPP[@]}" -d refresh_token=garbage
req "missing refresh_token parameter" "${T}" -d grant_type=refresh_token "${WEBAPP[@]}"
req "alice's refresh token presented by client no-direct-grants" "${T}" -d grant_type=refresh_token -d client_id=no-direct-grants -d client_secret=no-direct-test-secret -d "refresh_token=${RT}"

echo
echo "## d. client_credentials grant"
req "keycloak-resilient-sync, good secret" "${T}" -d grant_type=client_credentials -d client_id=keycloak-resilient-sync -d client_secret=sync-test-secret
printf '  - keys: `%s`\n' "$(jq -c 'keys' "${WORK}/b")"
printf '  - access-token claims: `%s`\n' "$(claims "$(jq -r .access_token "${WORK}/b")")"
req "keycloak-resilient-sync, wrong secret" "${T}" -d grant_type=client_credentials -d client_id=keycloak-resilient-sync -d client_secret=wrong
req "no-admin-rights, good secret" "${T}" -d grant_type=client_credentials -d client_id=no-admin-rights -d client_secret=no-admin-test-secret
printf '  - access-token claims: `%s`\n' "$(claims "$(jq -r .access_token "${WORK}/b")")"
req "webapp (service accounts off)" "${T}" -d grant_type=client_credentials "${WEBAPP[@]}"

SYNC="$(cc keycloak-resilient-sync sync-test-secret)"
NOADM="$(cc no-admin-rights no-admin-test-secret)"
ALICE_AT="$(jq -r .access_token <<<"${LOGIN}")"

echo
echo "## e. admin API: user search (token of keycloak-resilient-sync unless said)"
req "username=alice&exact=true" -H "Authorization: Bearer ${SYNC}" "${A}/users?username=alice&exact=true"
req "username=ALICE&exact=true" -H "Authorization: Bearer ${SYNC}" "${A}/users?username=ALICE&exact=true"
req "username=ali&exact=true" -H "Authorization: Bearer ${SYNC}" "${A}/users?username=ali&exact=true"
req "username=ali (not exact: substring)" -H "Authorization: Bearer ${SYNC}" "${A}/users?username=ali"
req "username=zed&exact=true (unknown)" -H "Authorization: Bearer ${SYNC}" "${A}/users?username=zed&exact=true"
req "username=carol&exact=true (disabled)" -H "Authorization: Bearer ${SYNC}" "${A}/users?username=carol&exact=true"
req "no Authorization header" "${A}/users?username=alice&exact=true"
req "Bearer garbage" -H "Authorization: Bearer garbage" "${A}/users?username=alice&exact=true"
req "token of no-admin-rights" -H "Authorization: Bearer ${NOADM}" "${A}/users?username=alice&exact=true"
req "alice's own user token" -H "Authorization: Bearer ${ALICE_AT}" "${A}/users?username=alice&exact=true"
req "unknown realm nope" -H "Authorization: Bearer ${SYNC}" "${B}/admin/realms/nope/users?username=alice&exact=true"

BOB="$(user_id bob)"
RESET='{"type":"password","value":"New-Password-9","temporary":false}'
echo
echo "## f. admin API: reset-password (bob, id ${BOB})"
req "value \"short\" (policy length(8))" -X PUT -H "Authorization: Bearer ${SYNC}" -H "${JSON}" -d '{"type":"password","value":"short","temporary":false}' "${A}/users/${BOB}/reset-password"
req "value \"\" (empty)" -X PUT -H "Authorization: Bearer ${SYNC}" -H "${JSON}" -d '{"type":"password","value":"","temporary":false}' "${A}/users/${BOB}/reset-password"
req "unknown user id" -X PUT -H "Authorization: Bearer ${SYNC}" -H "${JSON}" -d "${RESET}" "${A}/users/00000000-0000-0000-0000-000000000000/reset-password"
req "token of no-admin-rights" -X PUT -H "Authorization: Bearer ${NOADM}" -H "${JSON}" -d "${RESET}" "${A}/users/${BOB}/reset-password"
req "no Authorization header" -X PUT -H "${JSON}" -d "${RESET}" "${A}/users/${BOB}/reset-password"
req "malformed JSON body" -X PUT -H "Authorization: Bearer ${SYNC}" -H "${JSON}" -d '{"type":' "${A}/users/${BOB}/reset-password"
req "no Content-Type header" -X PUT -H "Authorization: Bearer ${SYNC}" -d "${RESET}" "${A}/users/${BOB}/reset-password"
req "success, New-Password-9" -X PUT -H "Authorization: Bearer ${SYNC}" -H "${JSON}" -d "${RESET}" "${A}/users/${BOB}/reset-password"

echo
echo "## g. admin API: create / delete users"
FRANK='{"username":"frank","enabled":true,"email":"frank@example.test","emailVerified":true,"firstName":"Frank","lastName":"Test","credentials":[{"type":"password","value":"Frank-Password-1","temporary":false}]}'
req "create frank with password" -X POST -H "Authorization: Bearer ${SYNC}" -H "${JSON}" -d "${FRANK}" "${A}/users"
FRANK_URL="$(grep -i '^location:' "${WORK}/h" | tr -d '\r' | awk '{print $2}')"
req "frank logs in" "${T}" -d grant_type=password "${WEBAPP[@]}" -d username=frank -d password=Frank-Password-1
req "create frank again (same username and email)" -X POST -H "Authorization: Bearer ${SYNC}" -H "${JSON}" -d "${FRANK}" "${A}/users"
req "create alice again (same username, new email)" -X POST -H "Authorization: Bearer ${SYNC}" -H "${JSON}" -d '{"username":"alice","enabled":true,"email":"alice2@example.test","firstName":"A","lastName":"T"}' "${A}/users"
req "create ALICE (case differs, no email)" -X POST -H "Authorization: Bearer ${SYNC}" -H "${JSON}" -d '{"username":"ALICE","enabled":true}' "${A}/users"
req "create gina with password \"short\"" -X POST -H "Authorization: Bearer ${SYNC}" -H "${JSON}" -d '{"username":"gina","enabled":true,"email":"gina@example.test","firstName":"G","lastName":"T","credentials":[{"type":"password","value":"short","temporary":false}]}' "${A}/users"
req "gina afterwards (was she created?)" -H "Authorization: Bearer ${SYNC}" "${A}/users?username=gina&exact=true"
req "create without username" -X POST -H "Authorization: Bearer ${SYNC}" -H "${JSON}" -d '{"enabled":true}' "${A}/users"
req "create with token of no-admin-rights" -X POST -H "Authorization: Bearer ${NOADM}" -H "${JSON}" -d '{"username":"hank","enabled":true}' "${A}/users"
req "create ivan: username + password only" -X POST -H "Authorization: Bearer ${SYNC}" -H "${JSON}" -d '{"username":"ivan","enabled":true,"credentials":[{"type":"password","value":"Ivan-Password-1","temporary":false}]}' "${A}/users"
IVAN_URL="$(grep -i '^location:' "${WORK}/h" | tr -d '\r' | awk '{print $2}')"
req "ivan logs in (no email/first/last name)" "${T}" -d grant_type=password "${WEBAPP[@]}" -d username=ivan -d password=Ivan-Password-1
req "GET frank by id (Location URL)" -H "Authorization: Bearer ${SYNC}" "${FRANK_URL}"
req "DELETE frank" -X DELETE -H "Authorization: Bearer ${SYNC}" "${FRANK_URL}"
req "DELETE frank again" -X DELETE -H "Authorization: Bearer ${SYNC}" "${FRANK_URL}"
req "DELETE with token of no-admin-rights" -X DELETE -H "Authorization: Bearer ${NOADM}" "${IVAN_URL}"
req "DELETE ivan" -X DELETE -H "Authorization: Bearer ${SYNC}" "${IVAN_URL}"
req "frank logs in after delete" "${T}" -d grant_type=password "${WEBAPP[@]}" -d username=frank -d password=Frank-Password-1

echo
echo "## h. after the reset in f"
req "bob, new password New-Password-9" "${T}" -d grant_type=password "${WEBAPP[@]}" -d username=bob -d password=New-Password-9
req "bob, old password Bob-Password-1" "${T}" -d grant_type=password "${WEBAPP[@]}" -d username=bob -d password=Bob-Password-1
ERIN="$(user_id erin)"
ERIN_RT="$(pw erin Erin-Password-1 | jq -r .refresh_token)"
req "admin resets erin (temporary=false) while she has a session" -X PUT -H "Authorization: Bearer ${SYNC}" -H "${JSON}" -d '{"type":"password","value":"Erin-Password-2","temporary":false}' "${A}/users/${ERIN}/reset-password"
req "erin's refresh token from before the reset" "${T}" -d grant_type=refresh_token "${WEBAPP[@]}" -d "refresh_token=${ERIN_RT}"
req "admin resets erin with temporary=true" -X PUT -H "Authorization: Bearer ${SYNC}" -H "${JSON}" -d '{"type":"password","value":"Erin-Password-3","temporary":true}' "${A}/users/${ERIN}/reset-password"
req "erin logs in with the temporary password" "${T}" -d grant_type=password "${WEBAPP[@]}" -d username=erin -d password=Erin-Password-3
printf '  - erin'"'"'s requiredActions now: `%s`\n' "$(curl -s -H "Authorization: Bearer ${SYNC}" "${A}/users/${ERIN}" | jq -c .requiredActions)"

echo
echo "## i. SIGSTOP (scripts/keycloak.sh pause)"
"${KC}" pause 2>/dev/null
out="$(curl -sS -v --max-time 3 "${R}/.well-known/openid-configuration" 2>&1 >/dev/null | grep -E '^\* Connected|^curl:' || true)"
printf -- '- while paused, `curl --max-time 3`:\n'
sed -E 's/^/  - `/; s/$/`/' <<<"${out}"
"${KC}" resume 2>/dev/null
SHOW_BODY=0
req "after resume" "${R}/.well-known/openid-configuration"
