"""`r1kit serve`: an OpenAI/DeepSeek-compatible API, an Ollama-compatible API and a web chat
over one engine (DESIGN.md section 5).

| file | concept |
|---|---|
| app.py | `create_app`: routes, static web assets, error handlers, lifespan |
| workers.py | `--api-workers N`: N API processes in front of one engine core |
| generation.py | chat messages -> prompt ids; the engine (paged + async, or HF in a thread) |
| llamacpp.py | `r1kit serve model.gguf`: the same Generator over llama.cpp (llama-cpp-python) |
| sample_text.py | one sample streaming: detokenizing, stop strings, reasoning/answer split |
| openai_api.py | `/v1/chat/completions`, `/v1/completions`, `/v1/models` |
| ollama_api.py | `/api/chat`, `/api/generate`, `/api/tags`, `/api/show`, `/api/version` |
| web_api.py | the web chat's config and conversation list |
| auth.py | bearer keys, quota (402) and request-rate limit (429) |
| store.py | SQLite: hashed keys, usage, conversations |
| errors.py | errors in OpenAI's JSON shape with DeepSeek's status codes |
| term.py | `r1kit run`: the terminal chat |

The package imports nothing itself: `r1kit keys` and `r1kit run` (store.py, term.py) load
without FastAPI or torch; the server is `r1kit.serve.app.create_app`.
"""
