"""The data pipeline: corpus -> tokenizer -> token shards on disk -> deterministic batches.

    config.py     DataConfig and the tokenizer variants (pure Python)
    corpus.py     documents as bytes from a file, a folder, or the built-in `stdlib` corpus
    tokenizers/   byte and BPE tokenizers, lossless on arbitrary bytes
    shards.py     prepare(): cached train.bin / val.bin + meta.json
    loader.py     TrainLoader and val_batches
"""
