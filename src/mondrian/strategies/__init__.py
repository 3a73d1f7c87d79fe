"""Analysis strategies (baseline, rag, lora), chosen by name, composed by a fallback."""
