"""Backbone loading, frame features in HDF5, and their alignment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_wav
from transformers import (
    Data2VecAudioConfig,
    Data2VecAudioModel,
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

from gmptl.backbone import SpeechEncoder, check_layers, load_backbone, load_backbone_config
from gmptl.batching import length_batches
from gmptl.errors import BackboneError, FeatureError
from gmptl.features import extract_features
from gmptl.frames import layer_dataset, open_h5, read_alignment, read_attrs

TOLERANCE = 1e-4  # max abs difference between batched and one-at-a-time features (float32, CPU)


def tiny_config(cls, norm: str):
    extra = {} if cls is Data2VecAudioConfig else {"feat_extract_norm": norm, "do_stable_layer_norm": norm == "layer"}
    return cls(
        **extra,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_bias=norm == "layer",
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        layerdrop=0.0,
    )


@pytest.mark.parametrize(
    ("cls", "model_cls", "norm"),
    [
        (HubertConfig, HubertModel, "group"),  # hubert-base style: padding would change group-norm statistics
        (HubertConfig, HubertModel, "layer"),  # hubert-large style
        (Wav2Vec2Config, Wav2Vec2Model, "layer"),
        (WavLMConfig, WavLMModel, "group"),
        (Data2VecAudioConfig, Data2VecAudioModel, "layer"),  # stacked positional convs: encoded one by one
    ],
)
@pytest.mark.parametrize("normalize", [False, True])
def test_batched_features_equal_unpadded_single_utterances(cls, model_cls, norm, normalize):
    torch.manual_seed(0)
    encoder = SpeechEncoder(model_cls(tiny_config(cls, norm)).eval(), normalize_input=normalize)
    waves = [torch.randn(n) * s for n, s in ((16000, 0.1), (7777, 0.5), (24321, 0.2), (3200, 1.0))]
    lengths = torch.tensor([len(w) for w in waves])
    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    with torch.no_grad():
        batched, last, mask = encoder(padded, lengths, [1, 2])
        for i, wave in enumerate(waves):
            single, single_last, single_mask = encoder(wave[None], lengths[i : i + 1], [1, 2])
            n = int(single_mask.sum())
            assert int(mask[i].sum()) == n
            for layer in (1, 2):
                assert (batched[layer][i, :n] - single[layer][0]).abs().max() < TOLERANCE
            assert (last[i, :n] - single_last[0]).abs().max() < TOLERANCE


def test_layer_l_is_huggingface_hidden_states_l():
    torch.manual_seed(1)
    model = HubertModel(tiny_config(HubertConfig, "group")).eval()
    wave = torch.randn(1, 12000)
    with torch.no_grad():
        reference = model(wave, output_hidden_states=True).hidden_states
        ours, last, _ = SpeechEncoder(model, False)(wave, torch.tensor([12000]), [1, 2, 3])
    for layer in (1, 2, 3):
        torch.testing.assert_close(ours[layer], reference[layer])
    torch.testing.assert_close(last, reference[3])


def test_tiny_backbone_makes_about_50_frames_per_second(tiny_backbone):
    encoder = SpeechEncoder(load_backbone(tiny_backbone), False)
    assert encoder.frame_lengths(torch.tensor([16000, 160000])).tolist() == [49, 499]
    assert encoder.frame_hop == 320


def test_missing_backbone_fails_at_once_naming_it(tmp_path):
    with pytest.raises(BackboneError, match="backbone 'nobody/no-such-hubert' is neither a local folder"):
        load_backbone_config("nobody/no-such-hubert")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneError, match="has no config.json"):
        load_backbone_config(str(tmp_path / "empty"))


def test_unsupported_backbone_type_is_rejected(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(
        tmp_path
    )
    with pytest.raises(BackboneError, match="'bert' model; supported: hubert, wavlm"):
        load_backbone_config(str(tmp_path))


def test_asking_for_a_layer_the_backbone_lacks_is_an_error(tiny_backbone):
    with pytest.raises(BackboneError, match=r"layer\(s\) \[5\].*valid: 1..2"):
        check_layers(load_backbone(tiny_backbone), [1, 5], tiny_backbone)


def test_length_batches_respect_the_budget_and_cover_everything():
    samples = np.array([100, 5000, 300, 4000, 90000, 250])
    batches = length_batches(samples, budget=10000)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * samples[batch].max() <= 10000
    assert batches[0].tolist() == [4]  # the long utterance goes alone


def fold_table(tmp_path, durations):
    rows = []
    for i, seconds in enumerate(durations):
        path = tmp_path / f"u{i}.wav"
        write_wav(path, seconds, seed=i)
        rows.append(
            {"utt_id": f"Ses01F_impro01_F{i:03d}", "path": str(path), "split": ["train", "valid", "test"][i % 3]}
        )
    return pd.DataFrame(rows)


def test_feature_file_layout_and_alignment(tmp_path, tiny_backbone):
    table = fold_table(tmp_path, [1.0, 0.5, 2.2, 0.7, 1.3])
    encoder = SpeechEncoder(load_backbone(tiny_backbone), False)
    out = tmp_path / "features.h5"
    extract_features(
        encoder,
        table,
        [1, 2],
        out,
        sample_rate=16000,
        on_format_mismatch="error",
        batch_seconds=2.5,
        device=torch.device("cpu"),
        attrs={"fold": 1, "backbone": tiny_backbone},
    )
    with open_h5(out) as handle:
        alignment = read_alignment(handle)
        attrs = read_attrs(handle)
        assert list(alignment.utt_ids) == table["utt_id"].tolist()
        assert list(alignment.split) == table["split"].tolist()
        assert alignment.lengths.tolist() == [49, 24, 109, 34, 64]
        assert alignment.offsets.tolist() == [0, 49, 73, 182, 216]
        for layer in (1, 2):
            data = layer_dataset(handle, layer)
            assert data.dtype == np.float16 and data.shape == (280, 32)
            assert data.chunks is None  # contiguous
        assert attrs["fold"] == 1 and attrs["layers"] == [1, 2] and attrs["frame_rate"] == 50.0
        stored = handle["layer_2"][73:182].astype(np.float32)
    from gmptl.audio import load_audio

    wave = torch.from_numpy(load_audio(table["path"][2], 16000))
    with torch.no_grad():
        hidden, _, _ = encoder(wave[None], torch.tensor([len(wave)]), [2])
    np.testing.assert_allclose(stored, hidden[2][0].numpy(), atol=2e-3, rtol=2e-3)  # float16 storage


def test_corrupt_or_incomplete_feature_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(FeatureError, match="bad.h5' is corrupt or not HDF5"):
        open_h5(bad)
    with pytest.raises(FeatureError, match="does not exist"):
        open_h5(tmp_path / "missing.h5")
    import h5py

    with h5py.File(tmp_path / "partial.h5", "w") as handle:
        handle["utt_ids"] = np.array([b"a"])
    with pytest.raises(FeatureError, match=r"lacks dataset\(s\) \['split', 'offsets', 'lengths'\]"):
        open_h5(tmp_path / "partial.h5")


def test_failed_extraction_leaves_no_file(tmp_path, tiny_backbone):
    table = fold_table(tmp_path, [1.0, 0.5])
    table.loc[1, "path"] = str(tmp_path / "missing.wav")
    out = tmp_path / "features.h5"
    with pytest.raises(Exception, match="missing.wav"):
        extract_features(
            SpeechEncoder(load_backbone(tiny_backbone), False),
            table,
            [1],
            out,
            sample_rate=16000,
            on_format_mismatch="error",
            batch_seconds=10,
            device=torch.device("cpu"),
        )
    assert list(tmp_path.glob("features.h5*")) == [] and not any(
        p.name.startswith(".features") for p in tmp_path.iterdir()
    )


@pytest.mark.parametrize(("rate", "samples"), [(32000, 14805), (44100, 44101), (8000, 12345), (48000, 144007)])
def test_header_based_length_matches_what_resampling_produces(rate, samples):
    import soxr

    from gmptl.audio import resampled_frames

    produced = len(soxr.resample(np.zeros(samples, np.float32), rate, 16000, quality="HQ"))
    assert resampled_frames(samples, rate, 16000) == produced


def test_other_rates_and_stereo_are_converted_at_load_time(tmp_path, tiny_backbone):
    import soundfile as sf

    rows = []
    for i, (rate, channels, samples) in enumerate([(32000, 1, 14805), (44100, 2, 50001), (16000, 1, 16000)]):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, 0.1 * np.random.default_rng(i).standard_normal((samples, channels)), rate)
        rows.append({"utt_id": f"u{i}", "path": str(path), "split": "train"})
    out = tmp_path / "features.h5"
    encoder = SpeechEncoder(load_backbone(tiny_backbone), False)
    extract_features(
        encoder,
        pd.DataFrame(rows),
        [1],
        out,
        sample_rate=16000,
        on_format_mismatch="convert",
        batch_seconds=10,
        device=torch.device("cpu"),
    )
    with open_h5(out) as handle:
        lengths = read_alignment(handle).lengths.tolist()
    assert lengths == encoder.frame_lengths(torch.tensor([7403, 18141, 16000])).tolist()
