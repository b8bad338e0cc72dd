"""Fake tt_transformers model_config: ModelArgs (what the duet backend reads and sets) and
DecodersPrecision (a marker; the fake model computes in f32 whatever it says)."""


class ModelArgs:
    """No lm_head_dtype attribute by default, like tt_transformers: its LM head then uses bfloat8_b."""

    def __init__(self, config, model_dir: str, max_batch_size: int, max_seq_len: int):
        self.config = config
        self.model_dir = model_dir
        self.n_layers = config.num_layers
        self.model_name = model_dir.rstrip("/").split("/")[-1]
        self.max_batch_size = max_batch_size
        self.max_seq_len = max_seq_len
        self.vocab_size = config.vocab_size
        self.padded_vocab_size = -(-config.vocab_size // 32) * 32
        self.tokenizer = None


class DecodersPrecision:
    @staticmethod
    def performance(n_layers, model_name):
        return ("performance", n_layers, model_name)

    @staticmethod
    def accuracy(n_layers, model_name):
        return ("accuracy", n_layers, model_name)
