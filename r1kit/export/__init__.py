"""Local deployment formats: GGUF for llama.cpp, a Modelfile for Ollama, GPTQ for vLLM and
`transformers`, what each costs in accuracy, and `r1kit info`.

| file | concept |
|---|---|
| gguf.py | `export_gguf`: Qwen2 / Llama weights and hyperparameters as llama.cpp names them; outtypes |
| vocab.py | the byte-level BPE tokenizer as GGUF tokenizer.ggml.* keys (types, merges, pre-tokenizer) |
| modelfile.py | `export_ollama`: the GGUF plus a Modelfile whose TEMPLATE is r1kit's chat template |
| gptq.py | `export_gptq`: GPTQ 4/8-bit through llmcompressor, compressed-tensors format |
| check.py | `check_formats`: held-out pass@1 of each format beside the original's (`--check`) |
| info.py | `describe` / `memory_table`: parameters, context, memory to run and to train |

`r1kit serve model.gguf` lives with the server (serve/llamacpp.py).
"""
