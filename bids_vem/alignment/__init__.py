"""LLM-VEM alignment: fine-tune an image encoder towards caption embeddings (SCIENCE.md §1)."""
