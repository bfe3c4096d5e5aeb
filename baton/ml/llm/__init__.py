"""Fine-tuning a pretrained causal language model every site holds (``causal_lm_finetune``)."""
