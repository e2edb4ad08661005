import io
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.audio import SAMPLE_RATE, AudioError, audio_duration, load_audio, read_audio, resample


def test_reads_nist_sphere_at_16k(an4_test_utts):
    u = an4_test_utts[0]
    wave = load_audio(u.audio)
    assert wave.dtype == torch.float32 and wave.dim() == 1
    assert abs(wave.shape[0] / SAMPLE_RATE - u.duration) < 0.01
    assert 0.01 < wave.abs().max() <= 1.0


def test_resamples_8k_wav_to_16k(fsdd_dir):
    path = sorted(fsdd_dir.glob("*.wav"))[0]
    samples, sr = read_audio(path)
    assert sr == 8000
    wave = load_audio(path)
    assert abs(wave.shape[0] - 2 * samples.shape[0]) <= 1


def test_downmixes_stereo_by_averaging(tmp_path, an4_test_utts):
    mono = load_audio(an4_test_utts[0].audio).numpy()
    stereo = np.stack([mono, 0.5 * mono], axis=1)  # (S, 2)
    path = tmp_path / "stereo.flac"
    sf.write(path, stereo, SAMPLE_RATE, subtype="PCM_24")
    wave = load_audio(path).numpy()
    np.testing.assert_allclose(wave, 0.75 * mono, atol=1e-4)


def test_array_input_is_taken_as_16k_mono():
    wave = load_audio(np.zeros(1600, dtype=np.float64))
    assert wave.dtype == torch.float32 and wave.shape == (1600,)
    with pytest.raises(AudioError, match="mono"):
        load_audio(np.zeros((2, 100)))


def test_missing_file_error_names_it(tmp_path):
    path = tmp_path / "nowhere.wav"
    with pytest.raises(AudioError, match="nowhere.wav: no such file"):
        load_audio(path)


def test_non_audio_bytes_error_names_file(tmp_path):
    path = tmp_path / "fake.wav"
    path.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match=r"fake.wav: cannot decode audio \(soundfile: .+; FFmpeg: .+\)"):
        load_audio(path)                                  # both readers tried, both reasons given
    with pytest.raises(AudioError, match="fake.wav"):
        audio_duration(path)


def test_change_speed_scales_length_and_pitch(an4_test_utts):
    from asr.augment import change_speed
    from asr.data import pad_waves

    t = torch.arange(16000) / 16000
    tone = torch.sin(2 * torch.pi * 1000 * t)                          # 1 s at 1 kHz
    real = load_audio(an4_test_utts[0].audio)
    waves, lengths = pad_waves([tone, real])
    for speed in (0.9, 1.1):
        out, new = change_speed(waves, lengths, speed)
        ceil = lambda n, speed=speed: -(-n * 100 // round(speed * 100))  # samples / speed, rounded up
        assert new.tolist() == [ceil(16000), ceil(real.shape[0])]
        spectrum = torch.fft.rfft(out[0, :new[0]]).abs()
        peak_hz = spectrum.argmax().item() * 16000 / new[0].item()
        assert abs(peak_hz - 1000 * speed) < 5
        assert real.shape[0] > 20000 and out[0, new[0] + 50:].abs().max() < 1e-3  # padding stays silent
    assert change_speed(waves, lengths, 1.0)[0] is waves


def test_add_noise_hits_the_snr_asked_for_reproducibly_and_keeps_padding_silent(an4_test_utts):
    from asr.augment import add_noise
    from asr.data import pad_waves
    waves, lengths = pad_waves([u.samples() for u in an4_test_utts[:4]])          # (4, S), real speech
    noisy = add_noise(waves, lengths, (10.0, 10.0), torch.Generator().manual_seed(0))
    again = add_noise(waves, lengths, (10.0, 10.0), torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)                                              # seeded: the same noise
    for i, n in enumerate(lengths.tolist()):
        signal, noise = waves[i, :n], noisy[i, :n] - waves[i, :n]
        snr = 10 * torch.log10(signal.pow(2).mean() / noise.pow(2).mean())
        assert abs(snr.item() - 10.0) < 0.3, snr
        assert torch.all(noisy[i, n:] == 0)                                       # padding stays zero
    ranged = add_noise(waves, lengths, (0.0, 30.0), torch.Generator().manual_seed(1))
    snrs = [10 * torch.log10(waves[i, :n].pow(2).mean() / (ranged[i, :n] - waves[i, :n]).pow(2).mean()).item()
            for i, n in enumerate(lengths.tolist())]
    assert all(-0.5 < s < 30.5 for s in snrs) and max(snrs) - min(snrs) > 1     # drawn per utterance


def _encode(path, wave: np.ndarray, codec: str, rate: int, container: str, video: bool = False, audio: bool = True):
    """Write (S,) 16 kHz samples with FFmpeg's own encoder `codec` (PyAV), as a phone or a browser would;
    `video`: with a video stream beside the audio, as in a screen recording."""
    import av

    with av.open(str(path), "w", format=container) as out:
        v = out.add_stream("mpeg4", rate=10) if video else None
        if v is not None:
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        if audio:
            a = out.add_stream(codec, rate=rate, layout="mono")
            if codec == "aac":
                a.bit_rate = 64000
            resampler = av.AudioResampler(format=a.codec_context.format.name, layout="mono", rate=rate)
            source = av.AudioFrame.from_ndarray((wave * 32767).astype(np.int16)[None], format="s16", layout="mono")
            source.sample_rate = SAMPLE_RATE
            for frame in resampler.resample(source) + resampler.resample(None):
                for packet in a.encode(frame):
                    out.mux(packet)
            for packet in a.encode():
                out.mux(packet)
        if v is not None:
            for i in range(int(len(wave) / SAMPLE_RATE * 10)):
                image = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 7 % 255, np.uint8), format="rgb24")
                image.pts = i
                for packet in v.encode(image):
                    out.mux(packet)
            for packet in v.encode():
                out.mux(packet)


# name -> (encoder, its rate, container, with video)
FFMPEG_ONLY = {"phone.m4a": ("aac", 16000, "mp4", False), "browser.webm": ("libopus", 48000, "webm", False),
               "screen.mp4": ("aac", 16000, "mp4", True), "camera.mkv": ("libopus", 48000, "matroska", True),
               "voicemail.amr": ("libopencore_amrnb", 8000, "amr", False)}


@pytest.fixture(scope="module")
def ffmpeg_files(an4_test_utts, tmp_path_factory):
    pytest.importorskip("av")
    d = tmp_path_factory.mktemp("ffmpeg")
    wave = an4_test_utts[0].samples().numpy()
    for name, (codec, rate, container, video) in FFMPEG_ONLY.items():
        _encode(d / name, wave, codec, rate, container, video)
    return d, wave


@pytest.mark.parametrize("name", list(FFMPEG_ONLY))
def test_what_only_ffmpeg_decodes_is_read_through_pyav(ffmpeg_files, name):
    d, wave = ffmpeg_files
    with pytest.raises(sf.LibsndfileError):
        sf.info(str(d / name))                           # soundfile cannot: the FFmpeg path is what reads it
    samples, rate = read_audio(d / name)
    assert rate == FFMPEG_ONLY[name][1] and samples.shape[1] == 1 and samples.dtype == np.float32
    assert audio_duration(d / name) == pytest.approx(len(wave) / SAMPLE_RATE, abs=0.1)
    y = load_audio(d / name).numpy()                      # 16 kHz mono, whatever it was stored as
    lag = int(np.argmax(np.correlate(y[:len(wave) // 2 + 2048], wave[:len(wave) // 2], "valid")))   # encoder delay
    n = min(len(y) - lag, len(wave))
    similarity = np.corrcoef(y[lag:lag + n], wave[:n])[0, 1]
    assert similarity > (0.5 if name.endswith(".amr") else 0.95), similarity     # AMR: 8 kHz narrowband speech
    part, _ = read_audio(d / name, start=0.5, end=1.5)     # a segment of it
    assert part.shape[0] == rate


def test_windows_of_a_file_join_into_one_read_of_it(ffmpeg_files, an4_test_utts, fsdd_dir, tmp_path):
    """audio_windows reads a file a window at a time (a 44.1 kHz stereo FLAC, an 8 kHz WAV, SPHERE, and webm / m4a
    through FFmpeg): each window starts where the one before ended, only the last says so, the windows joined
    are load_audio's samples (resampling included, within float rounding), and an empty file is refused."""
    from asr.audio import audio_windows

    d, _ = ffmpeg_files
    speech = torch.cat([load_audio(u.audio) for u in an4_test_utts[:6]])                 # ~20 s
    stereo = tmp_path / "stereo.flac"
    x = resample(speech, SAMPLE_RATE, 44100).numpy()
    sf.write(stereo, np.stack([x, 0.5 * x], axis=1), 44100, subtype="PCM_24")
    digits = next(iter(sorted(fsdd_dir.rglob("*.wav"))))                                   # 8 kHz
    for path in (stereo, digits, Path(an4_test_utts[0].audio), d / "browser.webm", d / "phone.m4a"):
        whole = load_audio(path)
        for seconds in (0.37, 2.0, 1000.0):
            windows = list(audio_windows(path, seconds=seconds))
            assert [w.last for w in windows] == [False] * (len(windows) - 1) + [True], (path, seconds)
            assert [w.start for w in windows] == [sum(v.wave.shape[0] for v in windows[:i])
                                                  for i in range(len(windows))]
            assert all(abs(w.wave.shape[0] - seconds * SAMPLE_RATE) <= 1 for w in windows[:-1])
            joined = torch.cat([w.wave for w in windows])
            assert joined.shape == whole.shape and torch.allclose(joined, whole, atol=1e-6), (path, seconds)
        assert len(list(audio_windows(path, seconds=0.37))) > 1 or whole.shape[0] < 0.37 * SAMPLE_RATE
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1), np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="empty.wav: contains no samples"):
        list(audio_windows(empty))


def test_audio_held_in_memory_reads_as_its_file_does(ffmpeg_files, an4_test_utts, tmp_path):
    """load_audio_bytes: soundfile's formats from the bytes themselves, FFmpeg's through a temporary file,
    both the samples load_audio gives the file; what neither reads is refused under the name given."""
    from asr.audio import load_audio_bytes

    d, _ = ffmpeg_files
    stereo = tmp_path / "stereo.flac"
    mono = load_audio(an4_test_utts[0].audio).numpy()
    sf.write(stereo, np.stack([mono, 0.5 * mono], axis=1), SAMPLE_RATE, subtype="PCM_24")
    for path in (Path(an4_test_utts[0].audio), stereo, d / "browser.webm", d / "phone.m4a"):
        assert torch.equal(load_audio_bytes(path.read_bytes(), suffix=path.suffix), load_audio(path)), path
    with pytest.raises(AudioError, match=r"^my upload: cannot decode audio \(soundfile: .+; FFmpeg: .+\)"):
        load_audio_bytes(b"this is not audio at all" * 10, name="my upload")


def test_speech_from_a_browser_or_a_phone_transcribes_as_the_original(ffmpeg_files, an4_model):
    import asr
    from asr.score import score

    d, wave = ffmpeg_files
    model = asr.load_model(an4_model)
    original = model.transcribe(wave).text
    for name in ("browser.webm", "camera.mkv", "phone.m4a", "screen.mp4"):
        text = model.transcribe(d / name).text
        assert score([original], [text]).cer.rate <= 10, (name, text, original)


def test_a_video_without_audio_is_refused_by_name(tmp_path, an4_test_utts):
    pytest.importorskip("av")
    _encode(tmp_path / "silent.mp4", an4_test_utts[0].samples().numpy(), "aac", 16000, "mp4", video=True,
            audio=False)
    with pytest.raises(AudioError, match=r"silent.mp4: cannot decode audio .*FFmpeg: no audio stream"):
        load_audio(tmp_path / "silent.mp4")


def silent_flac(hours: float, declared: bool = True) -> bytes:
    """`hours` of 16 kHz silence as FLAC (about 1 MB for 6 hours); `declared=False` zeroes STREAMINFO's total
    sample count, which FLAC allows ("unknown", as a streaming encoder writes it): only decoding tells its length."""
    out = io.BytesIO()
    block = np.zeros(SAMPLE_RATE * 600, np.int16)
    with sf.SoundFile(out, "w", SAMPLE_RATE, 1, format="FLAC", subtype="PCM_16") as f:
        for _ in range(round(hours * 6)):
            f.write(block)
    data = bytearray(out.getvalue())
    if not declared:                     # "fLaC", a 4-byte block header, then STREAMINFO: 36 bits at its byte 13.5
        data[21] &= 0xF0
        data[22:26] = bytes(4)
    return bytes(data)


def test_audio_past_a_limit_is_refused_from_its_header_or_as_soon_as_decoding_passes_it(ffmpeg_files, tmp_path):
    from asr.audio import AudioTooLong, load_audio_bytes

    declared, unknown = silent_flac(6), silent_flac(6, declared=False)
    assert len(declared) < 2 * 1024 ** 2 and sf.info(io.BytesIO(unknown)).frames > 10 ** 15
    with pytest.raises(AudioTooLong, match=r"^an upload: lasts 21600\.0 s; at most 600 s are taken$") as e:
        load_audio_bytes(declared, name="an upload", max_seconds=600)
    assert e.value.seconds == 21600.0
    with pytest.raises(AudioTooLong, match=r"^an upload: lasts more than 600 s; at most 600 s are taken$") as e:
        load_audio_bytes(unknown, name="an upload", max_seconds=600)
    assert e.value.seconds is None and e.value.limit == 600
    path = tmp_path / "six_hours.flac"
    path.write_bytes(unknown)
    with pytest.raises(AudioTooLong, match=rf"^{re.escape(str(path))}: lasts more than 60 s"):
        load_audio(path, max_seconds=60)
    d, wave = ffmpeg_files                                # FFmpeg's formats: the container's length, or the decoding
    for name in ("browser.webm", "phone.m4a"):
        with pytest.raises(AudioTooLong, match="at most 1 s are taken"):
            load_audio(d / name, max_seconds=1.0)
        assert torch.equal(load_audio(d / name, max_seconds=60), load_audio(d / name))
    assert torch.equal(load_audio_bytes(silent_flac(1 / 6), max_seconds=600), torch.zeros(SAMPLE_RATE * 600))
