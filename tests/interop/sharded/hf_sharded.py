"""Sharded Hugging Face checkpoints for ckpt's tests (crates/ckpt/tests/it/sharded_hf.rs).

Usage:
  python hf_sharded.py write DIR   writes DIR/transformers (save_pretrained of a tiny
                                   config-built GPT-2, max_shard_size 40KB), DIR/hub
                                   (huggingface_hub.save_torch_state_dict, 30KB), DIR/hub_bin
                                   (the same as torch shards) and
                                   DIR/reference.safetensors (every shard merged by
                                   safetensors' own loader), then prints OK
  python hf_sharded.py check OUT REF
                                   loads OUT (shards ckpt wrote) with transformers'
                                   load_sharded_checkpoint into a fresh model, with
                                   from_pretrained (the config copied beside), and with
                                   safetensors' load_file shard by shard; compares both with
                                   REF; prints ALL OK
No download: the model is built from its config.
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file


def tiny_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


def merged_shards(directory):
    """Every shard of a sharded safetensors directory, loaded by safetensors itself."""
    index = [f for f in os.listdir(directory) if f.endswith(".safetensors.index.json")]
    if index:
        with open(os.path.join(directory, index[0])) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = [f for f in os.listdir(directory) if f.endswith(".safetensors")]
    merged = {}
    for name in files:
        merged.update(load_file(os.path.join(directory, name)))
    return merged


def write(out):
    from huggingface_hub import save_torch_state_dict

    model = tiny_model()
    model.save_pretrained(os.path.join(out, "transformers"), max_shard_size="40KB")
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()
             if k != "lm_head.weight"}  # tied to the embedding; written once
    os.makedirs(os.path.join(out, "hub"), exist_ok=True)
    save_torch_state_dict(state, os.path.join(out, "hub"), max_shard_size="30KB")
    reference = merged_shards(os.path.join(out, "transformers"))
    save_file(reference, os.path.join(out, "reference.safetensors"))
    hub = merged_shards(os.path.join(out, "hub"))
    save_file(hub, os.path.join(out, "hub_reference.safetensors"))
    # Torch shards: pytorch_model-0000i-of-0000n.bin and pytorch_model.bin.index.json.
    bin_dir = os.path.join(out, "hub_bin")
    os.makedirs(bin_dir, exist_ok=True)
    save_torch_state_dict(state, bin_dir, max_shard_size="30KB", safe_serialization=False)
    merged = {}
    for name in sorted(os.listdir(bin_dir)):
        if name.endswith(".bin"):
            merged.update(torch.load(os.path.join(bin_dir, name), weights_only=True))
    save_file(merged, os.path.join(out, "hub_bin_reference.safetensors"))
    print("OK")


def check(out, ref):
    try:
        from transformers.trainer_utils import load_sharded_checkpoint
    except ImportError:  # transformers < 5
        from transformers.modeling_utils import load_sharded_checkpoint
    from transformers import GPT2LMHeadModel

    reference = load_file(ref)
    loaded = merged_shards(out)
    assert loaded.keys() == reference.keys(), (sorted(loaded), sorted(reference))
    for k, v in reference.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v), k
    model = tiny_model()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    load_sharded_checkpoint(model, out, strict=False)
    state = model.state_dict()
    for k, v in reference.items():
        assert torch.equal(state[k], v), f"transformers loaded another {k}"
    # from_pretrained, given the config save_pretrained wrote beside the reference.
    config = os.path.join(os.path.dirname(ref), "transformers", "config.json")
    shutil.copy(config, os.path.join(out, "config.json"))
    state = GPT2LMHeadModel.from_pretrained(out).state_dict()
    for k, v in reference.items():
        assert torch.equal(state[k], v), f"from_pretrained loaded another {k}"
    print("ALL OK")


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        check(sys.argv[2], sys.argv[3])
