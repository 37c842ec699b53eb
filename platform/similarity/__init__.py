"""Seeing with the machine's eyes: the CNN's embeddings of a workflow's subjects in pgvector, and what
a scientist does with them (similar subjects, anomalies, a map, "send these first", a new question)."""
