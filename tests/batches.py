"""A mixed image + video prompt batch on a tiny model, shared by the generation and log-prob tests."""

from videor1.config import MediaConfig
from videor1.data.dataset import load_dataset
from videor1.models.inputs import load_sample_media, processor_inputs, prompt_text, vision_factor
from videor1.models.load import load_model_and_processor

# small budgets keep a forward pass in milliseconds: 64x64 per frame at most
MEDIA = MediaConfig(video_min_pixels=32 * 32, video_max_pixels=64 * 64, image_min_pixels=32 * 32,
                    image_max_pixels=64 * 64, max_frames=8)


def mixed_batch(model_path, synth_root):
    """(model, processor, left-padded inputs) for video, image, video: mixed media and prompt lengths."""
    model, processor = load_model_and_processor(model_path, dtype="float32")
    samples = load_dataset(synth_root / "train.json", synth_root).samples
    batch = [next(s for s in samples if s.is_video), next(s for s in samples if not s.is_video),
             [s for s in samples if s.is_video][1]]
    media = [load_sample_media(s, MEDIA, vision_factor(processor)) for s in batch]
    inputs = processor_inputs(processor, [prompt_text(processor, s) for s in batch], media)
    return model, processor, inputs
