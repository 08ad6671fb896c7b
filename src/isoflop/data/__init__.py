"""The data pipeline: corpus -> tokenizer -> token shards on disk -> deterministic batches.

    config.py                     DataConfig: corpus, split, sequence length, tokenizer (pure Python)
    tokenizer_config.py           the TokenizerConfig family, the one list of tokenizer kinds (pure Python)
    corpus.py                     documents as bytes from a file, a folder, or the built-in `stdlib` corpus
    shards.py                     prepare_shards(): cached train.bin / val.bin + meta.json, keyed by their inputs
    loader.py                     TrainLoader (shuffled windows, resumable, rank-aware) and val_batches
    tokenizers/base.py            the Tokenizer protocol, BaseTokenizer, load_saved_tokenizer(folder)
    tokenizers/byte.py            byte: id = byte value, end-of-text 256
    tokenizers/escape.py          the reversible escape that feeds arbitrary bytes to string-based libraries
    tokenizers/bpe.py             bpe: byte-level BPE through Hugging Face `tokenizers`
    tokenizers/unigram.py         unigram: SentencePiece Unigram with byte fallback
    tokenizers/bytepiece.py       bytepiece: BytePiece's n-gram-chosen pieces, unigram Viterbi (training, API)
    tokenizers/bytepiece_kernels.py  BytePiece's Viterbi encoder over a byte trie, compiled with numba
    tokenizers/gzip.py            gzip: a document's zlib stream cut into 8- or 16-bit tokens
    tokenizers/arithmetic.py      the exact integer arithmetic coder's API and the float -> integer CDFs
    tokenizers/ac_kernels.py      the coder's bit loops (Witten-Neal-Cleary), compiled with numba
    tokenizers/static_ac.py       static-ac: arithmetic coding under a byte-unigram model
    tokenizers/m1.py              M1, the byte-level LM that drives the neural coders, and its one forward path
    tokenizers/neural_ac.py       ac: arithmetic coding under M1; the parts shared with equalinfo-ac
    tokenizers/equalinfo.py       equalinfo-ac: W-bit windows, M1 and the coder reset at each window
    tokenizers/equalinfo_cell.py  EqualInfoAC's "cell" window rule (where a window ends)
"""
