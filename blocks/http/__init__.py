"""HTTP/REST APIs: the block (`rest_api.RestApiSource`) and its private modules: `transport`
(httpx client, retries, rate limits), `auth`, `pagination` and `records`."""
