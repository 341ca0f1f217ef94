"""The original design's usage examples, run against a running `keycloak-resilient start`.

Written for the in-process ObjKeycloakResilient; only the import line changed. The client finds
the service's socket through $KEYCLOAK_RESILIENT_SOCKET (default data/control.sock).
"""

from keycloak_resilient import ObjKeycloakResilient

USERNAME = "john.doe"
PASSWORD = "password123"
PACKAGE = "webapp"

# Create the client
kr = ObjKeycloakResilient()

# Check availability
if kr.is_available():
    print("Keycloak is available")
else:
    print("Keycloak is unavailable - running in resilient mode")

# Authenticate (Keycloak first, cached token as the fallback)
token = kr.authenticate(USERNAME, PASSWORD, PACKAGE)
if token:
    if token["cached"]:
        print(f"Authenticated with a cached token (cached at {token['cached_at']})")
    else:
        print("Authenticated with Keycloak")
else:
    # Fall back to whatever token is still cached for the user
    cached = kr.get_cached_token(USERNAME, PACKAGE)
    if cached:
        print(f"Using the cached token from {cached['cached_at']}")
    else:
        print("Authentication failed and no cached token")

# Log the user in the way ObjUser.Login did
result = kr.login(USERNAME, PASSWORD, PACKAGE)
if result["success"]:
    print(f"Login OK: session {result['session_id']}, auth_mode {result['auth_mode']}, "
          f"keycloak {result['keycloak_status']}")
else:
    print(f"Login refused: {result['reason']}")

# Queue a password change for Keycloak (priority 1 runs first)
sync_id = kr.queue_sync(USERNAME, PACKAGE, "password_change",
                        {"new_password": "NewPassword456"}, priority=1)
print(f"Queued password change {sync_id}")

# Process the queue
processed = kr.process_sync_queue(batch_size=100)
print(f"Processed {processed} sync item(s)")

# Housekeeping
removed_tokens = kr.cleanup_expired_tokens(hours=48)
removed_syncs = kr.cleanup_completed_syncs(days=7)
print(f"Removed {removed_tokens} expired token(s) and {removed_syncs} completed sync(s)")

# Print the status
status = kr.get_status()
print(f"Available:      {status['available']}")
print(f"Circuit state:  {status['circuit_state']}")
print(f"Failure count:  {status['failure_count']}")
print(f"Mode:           {status['mode']}")
print(f"Pending syncs:  {status['pending_syncs']}")
print(f"Cached tokens:  {status['cached_tokens']}")
print(f"Config:         {status['config']}")
