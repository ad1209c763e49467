"""Step 4 of the method: the concept vocabulary, its text embeddings and the concept policy.

Modules: `wordnet` (find WordNet 3.0, open it with NLTK), `vocab` (the 146,347
(lemma, synset) concepts), `text_embed` (all-MiniLM-L6-v2 in JAX), `gpr` (Gaussian-process
regression), `policy` (scores -> sampling distribution -> concepts).
"""
