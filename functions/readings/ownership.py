"""Which API client owns each device: the contract between the stream worker, which publishes the device
registry's owners into Redis, and the functions that check them (ingest, query).

A client is its API key: API Gateway gives a function the caller's key id (requestContext.identity.apiKeyId),
and the registry (PostgreSQL's `devices.client_id`) holds the key id of each registered device's owner.

The worker replaces the whole map every OWNERS_PUBLISH_SECONDS: it writes the registry's owners under
OWNERS_STAGING_KEY, renames that over OWNERS_KEY (a hash: device id -> client id) and sets
OWNERS_PUBLISHED_KEY, which expires OWNERS_STALE_SECONDS later. A reader that finds OWNERS_PUBLISHED_KEY
missing cannot tell a device nobody registered from a registry it cannot see, so it answers 503: a registry
outage never turns into "allow all". The keys share one hash tag, so that they live in one Redis Cluster slot
(RENAME needs that).
"""

OWNERS_KEY = "{device-owners}"
OWNERS_STAGING_KEY = "{device-owners}:next"
OWNERS_PUBLISHED_KEY = "{device-owners}:published-at"
OWNERS_PUBLISH_SECONDS = 30
OWNERS_STALE_SECONDS = 300
