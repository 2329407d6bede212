"""The OpenAI-compatible fine-tuning API: `/v1/files` and `/v1/fine_tuning/jobs` in OpenAI's shapes, served by the
gateway process on a port of its own (BUGAGARIC_OPENAI_PORT), so `OpenAI(base_url="http://<gateway>:18081/v1",
api_key=<an API key>)` drives the platform. Like the REST gateway it holds no state: every route is FinetuneService
calls with the caller's bearer token passed through."""
