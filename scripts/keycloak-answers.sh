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

# --- account states, paging, keys (issues 12 and 18) ------------------------------------------
# From here on some requests need realm-management rights the sync client does not hold
# (realm settings, key providers): those use the throwaway master-realm admin that
# keycloak.sh bootstraps, through master's admin-cli (its tokens live 60 s: fetched per use).
MASTER_TOKEN_URL="${B}/realms/master/protocol/openid-connect/token"
master() {
    curl -s "${MASTER_TOKEN_URL}" -d grant_type=password -d client_id=admin-cli \
        --data-urlencode "username=${KC_BOOTSTRAP_ADMIN_USERNAME:-kc-admin}" \
        --data-urlencode "password=${KC_BOOTSTRAP_ADMIN_PASSWORD:-kc-admin-throwaway-pw}" | jq -r .access_token
}
login() { req "$1" "${T}" -d grant_type=password "${WEBAPP[@]}" --data-urlencode "username=$2" --data-urlencode "password=$3"; }
SHOW_BODY=1
SYNC="$(cc keycloak-resilient-sync sync-test-secret)"
AUTH=(-H "Authorization: Bearer ${SYNC}")
decode_part() {
    local p
    p="$(cut -d. -f"$2" <<<"$1" | tr '_-' '/+')"
    while ((${#p} % 4)); do p="${p}="; done
    base64 -d <<<"${p}" | jq -c .
}

echo
echo "## j. admin API: listing users page by page (users alice, bob, carol, dave, erin + 2 service accounts)"
SHOW_BODY=0
req "GET users (no parameters)" "${AUTH[@]}" "${A}/users"
printf '  - usernames: `%s`\n' "$(jq -c '[.[].username]' "${WORK}/b")"
req "GET users?first=0&max=2" "${AUTH[@]}" "${A}/users?first=0&max=2"
printf '  - usernames: `%s`\n' "$(jq -c '[.[].username]' "${WORK}/b")"
req "GET users?first=2&max=2" "${AUTH[@]}" "${A}/users?first=2&max=2"
printf '  - usernames: `%s`\n' "$(jq -c '[.[].username]' "${WORK}/b")"
req "GET users?first=4&max=2" "${AUTH[@]}" "${A}/users?first=4&max=2"
printf '  - usernames: `%s`\n' "$(jq -c '[.[].username]' "${WORK}/b")"
SHOW_BODY=1
req "GET users?first=6&max=2 (past the end)" "${AUTH[@]}" "${A}/users?first=6&max=2"
req "GET users?max=0" "${AUTH[@]}" "${A}/users?max=0"
printf '  - usernames: `%s`\n' "$(jq -c '[.[].username]' "${WORK}/b")"
req "GET users?first=-1&max=2" "${AUTH[@]}" "${A}/users?first=-1&max=2"
printf '  - usernames: `%s`\n' "$(jq -c '[.[].username]' "${WORK}/b")"
req "GET users?first=3 (no max)" "${AUTH[@]}" "${A}/users?first=3"
printf '  - usernames: `%s`\n' "$(jq -c '[.[].username]' "${WORK}/b")"
req "GET users?first=abc" "${AUTH[@]}" "${A}/users?first=abc"
req "GET users?first=0&max=2&briefRepresentation=true" "${AUTH[@]}" "${A}/users?first=0&max=2&briefRepresentation=true"
req "GET users?briefRepresentation=true&username=carol&exact=true" "${AUTH[@]}" "${A}/users?briefRepresentation=true&username=carol&exact=true"
req "GET users?enabled=false" "${AUTH[@]}" "${A}/users?enabled=false"
printf '  - usernames: `%s`\n' "$(jq -c '[.[].username]' "${WORK}/b")"
req "GET users?search=*&first=0&max=100" "${AUTH[@]}" "${A}/users?search=*&first=0&max=100"
printf '  - usernames: `%s`\n' "$(jq -c '[.[].username]' "${WORK}/b")"
req "GET users/count" "${AUTH[@]}" "${A}/users/count"
req "GET users/count?enabled=true" "${AUTH[@]}" "${A}/users/count?enabled=true"
req "GET users/count?username=ali" "${AUTH[@]}" "${A}/users/count?username=ali"
req "GET users/count, token of no-admin-rights" -H "Authorization: Bearer ${NOADM}" "${A}/users/count"

DAVE="$(user_id dave)"
echo
echo "## k. password grant for a user disabled through the admin API (dave, id ${DAVE})"
req "PUT users/{dave} {\"enabled\":false}" -X PUT "${AUTH[@]}" -H "${JSON}" -d '{"enabled":false}' "${A}/users/${DAVE}"
req "GET users/{dave} afterwards" "${AUTH[@]}" "${A}/users/${DAVE}"
login "dave (disabled), right password" dave Dave-Password-1
login "dave (disabled), wrong password" dave Wrong-Password-0
req "PUT users/{dave} {\"enabled\":true}" -X PUT "${AUTH[@]}" -H "${JSON}" -d '{"enabled":true}' "${A}/users/${DAVE}"
login "dave (enabled again), right password" dave Dave-Password-1

echo
echo "## l. required actions (dave)"
for action in VERIFY_EMAIL UPDATE_PASSWORD UPDATE_PROFILE CONFIGURE_TOTP TERMS_AND_CONDITIONS; do
    req "PUT users/{dave} {\"requiredActions\":[\"${action}\"]}" -X PUT "${AUTH[@]}" -H "${JSON}" -d "{\"requiredActions\":[\"${action}\"]}" "${A}/users/${DAVE}"
    login "dave with ${action}, right password" dave Dave-Password-1
done
login "dave with a required action, wrong password" dave Wrong-Password-0
req "PUT users/{dave} {\"requiredActions\":[\"NO_SUCH_ACTION\"]}" -X PUT "${AUTH[@]}" -H "${JSON}" -d '{"requiredActions":["NO_SUCH_ACTION"]}' "${A}/users/${DAVE}"
login "dave with NO_SUCH_ACTION, right password" dave Dave-Password-1
req "PUT users/{dave} {\"requiredActions\":[]}" -X PUT "${AUTH[@]}" -H "${JSON}" -d '{"requiredActions":[]}' "${A}/users/${DAVE}"
login "dave, no required action" dave Dave-Password-1

echo
echo "## m. user profile: creating users without email / first / last name"
req "GET users/profile (the realm's user profile; attributes, required)" "${AUTH[@]}" "${A}/users/profile"
printf '  - attributes: `%s`\n' "$(jq -c '[.attributes[] | {name, required}]' "${WORK}/b")"
req "create kim: username + password + names, no email" -X POST "${AUTH[@]}" -H "${JSON}" -d '{"username":"kim","enabled":true,"firstName":"Kim","lastName":"Test","credentials":[{"type":"password","value":"Kim-Password-1","temporary":false}]}' "${A}/users"
login "kim logs in (no email)" kim Kim-Password-1
login "kim, wrong password" kim Wrong-Password-0
req "create lee: username + password + email, no names" -X POST "${AUTH[@]}" -H "${JSON}" -d '{"username":"lee","enabled":true,"email":"lee@example.test","credentials":[{"type":"password","value":"Lee-Password-1","temporary":false}]}' "${A}/users"
login "lee logs in (no first/last name)" lee Lee-Password-1
LEE="$(user_id lee)"
req "GET users/{lee}" "${AUTH[@]}" "${A}/users/${LEE}"
req "PUT users/{lee} firstName + lastName" -X PUT "${AUTH[@]}" -H "${JSON}" -d '{"firstName":"Lee","lastName":"Test"}' "${A}/users/${LEE}"
login "lee logs in (names now set)" lee Lee-Password-1
req "create mo: username of 2 characters" -X POST "${AUTH[@]}" -H "${JSON}" -d '{"username":"mo","enabled":true}' "${A}/users"
req "create moe: full profile, no password" -X POST "${AUTH[@]}" -H "${JSON}" -d '{"username":"moe","enabled":true,"email":"moe@example.test","firstName":"Moe","lastName":"Test"}' "${A}/users"
login "moe logs in (no password credential)" moe Any-Password-1
req "create lee again" -X POST "${AUTH[@]}" -H "${JSON}" -d '{"username":"lee","enabled":true}' "${A}/users"
req "create with email kim would not have (duplicate email of alice)" -X POST "${AUTH[@]}" -H "${JSON}" -d '{"username":"nia","enabled":true,"email":"ALICE@example.test"}' "${A}/users"
req "create without enabled (what does the user get?)" -X POST "${AUTH[@]}" -H "${JSON}" -d '{"username":"ola","email":"ola@example.test","firstName":"Ola","lastName":"Test","credentials":[{"type":"password","value":"Ola-Password-1","temporary":false}]}' "${A}/users"
printf '  - ola: `%s`\n' "$(curl -s "${AUTH[@]}" "${A}/users?username=ola&exact=true" | jq -c '.[0] | {enabled, emailVerified, requiredActions}')"
login "ola logs in" ola Ola-Password-1

echo
echo "## n. deleted user, and the two kinds of 404"
req "create pat" -X POST "${AUTH[@]}" -H "${JSON}" -d '{"username":"pat","enabled":true,"email":"pat@example.test","firstName":"Pat","lastName":"Test","credentials":[{"type":"password","value":"Pat-Password-1","temporary":false}]}' "${A}/users"
PAT="$(user_id pat)"
login "pat logs in" pat Pat-Password-1
req "DELETE users/{pat}" -X DELETE "${AUTH[@]}" "${A}/users/${PAT}"
login "pat (deleted), right password" pat Pat-Password-1
req "GET users/{deleted pat id}" "${AUTH[@]}" "${A}/users/${PAT}"
req "PUT users/{deleted pat id}" -X PUT "${AUTH[@]}" -H "${JSON}" -d '{"enabled":false}' "${A}/users/${PAT}"
req "GET users/{deleted pat id}/credentials" "${AUTH[@]}" "${A}/users/${PAT}/credentials"
req "GET users/not-a-uuid" "${AUTH[@]}" "${A}/users/not-a-uuid"
req "GET users/{deleted pat id}, token of no-admin-rights" -H "Authorization: Bearer ${NOADM}" "${A}/users/${PAT}"
req "GET userz (no such route)" "${AUTH[@]}" "${A}/userz"
req "GET users/{alice}/nosuch (no such sub-route)" "${AUTH[@]}" "${A}/users/$(user_id alice)/nosuch"
req "GET users/{deleted pat id}/nosuch" "${AUTH[@]}" "${A}/users/${PAT}/nosuch"
req "GET /admin/realms/nope/users/{pat id} (wrong realm)" "${AUTH[@]}" "${B}/admin/realms/nope/users/${PAT}"
req "GET /admin/realms/nope/users/{pat id}, no token" "${B}/admin/realms/nope/users/${PAT}"
req "GET /admin/nosuch (outside any realm)" "${AUTH[@]}" "${B}/admin/nosuch"
req "GET /nosuch (outside the admin API)" "${B}/nosuch"

echo
echo "## o. brute-force detection (realm switched on for this section, then restored)"
MT="$(master)"
req "PUT realm bruteForceProtected=true, failureFactor=3, sync client's token" -X PUT "${AUTH[@]}" -H "${JSON}" -d '{"bruteForceProtected":true}' "${A}"
req "PUT realm bruteForceProtected=true, failureFactor=3 (master admin)" -X PUT -H "Authorization: Bearer ${MT}" -H "${JSON}" \
    -d '{"bruteForceProtected":true,"permanentLockout":false,"failureFactor":3,"waitIncrementSeconds":60,"maxFailureWaitSeconds":120,"minimumQuickLoginWaitSeconds":60,"quickLoginCheckMilliSeconds":1,"maxDeltaTimeSeconds":43200}' "${A}"
printf '  - realm now: `%s`\n' "$(curl -s -H "Authorization: Bearer ${MT}" "${A}" | jq -c '{bruteForceProtected,permanentLockout,failureFactor,waitIncrementSeconds,maxFailureWaitSeconds,bruteForceStrategy}')"
for i in 1 2 3; do login "erin, wrong password (${i}/3)" erin Wrong-Password-0; done
ERIN="$(user_id erin)"
# The detector counts failures asynchronously: wait (bounded) until it reports erin locked.
for _ in $(seq 1 50); do
    [[ "$(curl -s "${AUTH[@]}" "${A}/attack-detection/brute-force/users/${ERIN}" | jq -r .disabled)" == true ]] && break
    sleep 0.2
done
req "GET attack-detection/brute-force/users/{erin}" "${AUTH[@]}" "${A}/attack-detection/brute-force/users/${ERIN}"
req "GET users/{erin} while locked" "${AUTH[@]}" "${A}/users/${ERIN}"
req "GET users?username=erin&exact=true while locked" "${AUTH[@]}" "${A}/users?username=erin&exact=true"
req "GET users?username=erin&exact=true&briefRepresentation=true while locked" "${AUTH[@]}" "${A}/users?username=erin&exact=true&briefRepresentation=true"
login "erin (locked), right password (Erin-Password-3 is current, temporary: see h)" erin Erin-Password-3
req "admin resets erin (temporary=false) to clear the required action" -X PUT "${AUTH[@]}" -H "${JSON}" -d '{"type":"password","value":"Erin-Password-4","temporary":false}' "${A}/users/${ERIN}/reset-password"
login "erin (locked), right password Erin-Password-4" erin Erin-Password-4
login "erin (locked), wrong password" erin Wrong-Password-0
req "GET attack-detection/brute-force/users/{erin}, token of no-admin-rights" -H "Authorization: Bearer ${NOADM}" "${A}/attack-detection/brute-force/users/${ERIN}"
req "DELETE attack-detection/brute-force/users/{erin} (unlock)" -X DELETE "${AUTH[@]}" "${A}/attack-detection/brute-force/users/${ERIN}"
login "erin (unlocked), right password" erin Erin-Password-4
req "PUT realm bruteForceProtected=false (restore the fixture)" -X PUT -H "Authorization: Bearer $(master)" -H "${JSON}" -d '{"bruteForceProtected":false}' "${A}"

echo
echo "## p. issuer, JWKS and an access token's header and claims"
SHOW_BODY=0
req "GET well-known" "${R}/.well-known/openid-configuration"
printf '  - keys: `%s`\n' "$(jq -c '{issuer,jwks_uri,id_token_signing_alg_values_supported}' "${WORK}/b")"
JWKS_URI="$(jq -r .jwks_uri "${WORK}/b")"
SHOW_BODY=0
req "GET jwks_uri" "${JWKS_URI}"
printf '  - keys (n, x5c cut): `%s`\n' "$(jq -c '[.keys[] | with_entries(if (.key=="n" or .key=="x5c") then .value=((.value|tostring)[0:12]+"…") else . end)]' "${WORK}/b")"
SHOW_BODY=1
OLD_KIDS="$(jq -c '[.keys[] | select(.use=="sig") | .kid]' "${WORK}/b")"
login "alice, right password (the tokens decoded below are from a second login with scope=openid)" alice Alice-Password-1
AT="$(curl -s "${T}" -d grant_type=password "${WEBAPP[@]}" -d username=alice -d password=Alice-Password-1 -d scope=openid)"
printf '  - access-token header: `%s`\n' "$(decode_part "$(jq -r .access_token <<<"${AT}")" 1)"
printf '  - access-token claims: `%s`\n' "$(decode_part "$(jq -r .access_token <<<"${AT}")" 2)"
printf '  - id-token header: `%s`\n' "$(decode_part "$(jq -r .id_token <<<"${AT}")" 1)"
printf '  - id-token claims: `%s`\n' "$(decode_part "$(jq -r .id_token <<<"${AT}")" 2)"
printf '  - refresh-token header: `%s`\n' "$(decode_part "$(jq -r .refresh_token <<<"${AT}")" 1)"
printf '  - client-credentials (sync) token header: `%s`\n' "$(decode_part "${SYNC}" 1)"
OLD_AT="$(jq -r .access_token <<<"${AT}")"
req "GET userinfo with alice's token (no openid scope: see b)" -H "Authorization: Bearer $(pw alice Alice-Password-1 | jq -r .access_token)" "${R}/protocol/openid-connect/userinfo"
req "GET userinfo with alice's openid token" -H "Authorization: Bearer ${OLD_AT}" "${R}/protocol/openid-connect/userinfo"

echo
echo "## q. key rotation: a new rsa-generated key with a higher priority"
MT="$(master)"
REALM_ID="$(curl -s -H "Authorization: Bearer ${MT}" "${A}" | jq -r .id)"
SHOW_BODY=0
req "GET keys (master admin)" -H "Authorization: Bearer ${MT}" "${A}/keys"
printf '  - active: `%s`\n' "$(jq -c '.active' "${WORK}/b")"
printf '  - keys: `%s`\n' "$(jq -c '[.keys[] | {kid, algorithm, type, use, priority, status, providerId}]' "${WORK}/b")"
NEWKEY="{\"name\":\"rsa-rotated\",\"providerId\":\"rsa-generated\",\"providerType\":\"org.keycloak.keys.KeyProvider\",\"parentId\":\"${REALM_ID}\",\"config\":{\"priority\":[\"200\"],\"keySize\":[\"2048\"],\"algorithm\":[\"RS256\"],\"active\":[\"true\"],\"enabled\":[\"true\"]}}"
SHOW_BODY=1
req "POST components rsa-generated, sync client's token" -X POST "${AUTH[@]}" -H "${JSON}" -d "${NEWKEY}" "${A}/components"
req "POST components rsa-generated priority 200 (master admin)" -X POST -H "Authorization: Bearer ${MT}" -H "${JSON}" -d "${NEWKEY}" "${A}/components"
COMPONENT_URL="$(grep -i '^location:' "${WORK}/h" | tr -d '\r' | awk '{print $2}')"
SHOW_BODY=0
req "GET jwks_uri after the new key" "${JWKS_URI}"
printf '  - keys (n, x5c cut): `%s`\n' "$(jq -c '[.keys[] | with_entries(if (.key=="n" or .key=="x5c") then .value=((.value|tostring)[0:12]+"…") else . end)]' "${WORK}/b")"
printf '  - signing kids before: `%s`, after: `%s`\n' "${OLD_KIDS}" "$(jq -c '[.keys[] | select(.use=="sig") | .kid]' "${WORK}/b")"
SHOW_BODY=1
NEW_AT="$(pw alice Alice-Password-1 | jq -r .access_token)"
NEW_SYNC="$(cc keycloak-resilient-sync sync-test-secret)"
printf '  - kid of a token issued now: `%s`\n' "$(decode_part "${NEW_AT}" 1 | jq -r .kid)"
req "userinfo with the token signed by the old key" -H "Authorization: Bearer ${OLD_AT}" "${R}/protocol/openid-connect/userinfo"
req "admin API with a sync token signed by the old key" "${AUTH[@]}" "${A}/users/count"
req "DELETE the new key's component (master admin)" -X DELETE -H "Authorization: Bearer $(master)" "${COMPONENT_URL}"
SHOW_BODY=0
req "GET jwks_uri after removing it" "${JWKS_URI}"
printf '  - signing kids now: `%s`\n' "$(jq -c '[.keys[] | select(.use=="sig") | .kid]' "${WORK}/b")"
SHOW_BODY=1
printf '  - kid of a token issued now: `%s`\n' "$(decode_part "$(pw alice Alice-Password-1 | jq -r .access_token)" 1 | jq -r .kid)"
req "admin API with a sync token signed by the removed key" -H "Authorization: Bearer ${NEW_SYNC}" "${A}/users/count"
req "userinfo with alice's token signed by the removed key" -H "Authorization: Bearer ${NEW_AT}" "${R}/protocol/openid-connect/userinfo"
