"""The demo model's tokenizer: a byte-level BPE trained on a small built-in corpus, shaped as Z-Image's.

Wrapped as ``Qwen2Tokenizer`` with a Qwen3-style chat template (``ZImagePipeline`` applies it);
``assets.twin_model`` uses it too.
"""

from __future__ import annotations

import json

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

CHAT_TEMPLATE = (  # Qwen3's chat template, reduced to what ZImagePipeline uses
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

CORPUS = """
a portrait of a woman with long dark hair, soft window light, shallow depth of field
a portrait of a man with a beard, studio lighting, grey background, 85mm lens
close-up photo of an old fisherman, weathered skin, golden hour, film grain
professional headshot, business suit, neutral backdrop, sharp focus, high detail
a young girl smiling in a sunflower field, warm colors, natural light
black and white portrait, dramatic shadows, rembrandt lighting, fine art photography
a cinematic still of a woman in a red coat walking in the rain at night, neon reflections
an elegant bride in a white dress, bokeh, pastel tones, romantic mood
a smiling chef in a kitchen, candid, documentary style, morning light
a dancer mid-jump, motion blur, stage lights, vivid colors
low quality, blurry, deformed, distorted face, extra fingers, watermark, text, jpeg artifacts
oil painting of a noble lady, renaissance style, rich textures, museum lighting
watercolor portrait of a child with freckles, loose brush strokes, soft palette
retouch the photo: smooth skin, brighten eyes, keep identity, natural look
the quick brown fox jumps over the lazy dog 0123456789 !?.,:;'"()[]{}<>-+=*/
"""



def train_tokenizer(vocab_size: int = 600):
    """Train a byte-level BPE on ``CORPUS`` and wrap it as the tokenizer Z-Image expects."""
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS[:1],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS.strip().splitlines(), trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(pair) for pair in model["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=merges,
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=512,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
