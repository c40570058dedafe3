from qlora_grpo import hardware
from qlora_grpo.config import parse_config


def test_oom_message_lists_knobs_in_order():
    cfg = parse_config(["--num_generations", "8", "--max_completion_length", "256", "--lora_r", "16"])
    msg = hardware.oom_message(cfg)
    order = ["per_device_train_batch_size", "gradient_checkpointing", "quantization", "max_pixels",
             "max_completion_length", "num_generations", "lora_r"]
    positions = [msg.index(k) for k in order]
    assert positions == sorted(positions)
    assert "now 8" in msg and "now 256" in msg


def test_estimate_qlora_is_smaller_than_bf16(tmp_path):
    import json

    cfg = {"model_type": "qwen2_vl", "tie_word_embeddings": True,
           "text_config": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                           "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936},
           "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "hidden_size": 1536}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    q = hardware.estimate_gb(str(tmp_path), "nf4", 2, 8, 300, 256, 16)
    b = hardware.estimate_gb(str(tmp_path), "none", 2, 8, 300, 256, 16)
    # Qwen2-VL-2B: ~2.2B params; under NF4 the 0.67B-param vision tower stays 16-bit (families.skip_quant_modules)
    assert 1.8 < q["weights"] < 2.8 and 3.5 < b["weights"] < 4.8
    assert q["total"] < b["total"]
