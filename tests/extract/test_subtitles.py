from __future__ import annotations

import json
from pathlib import Path

import pytest

from norton_core.cli import main
from norton_core.errors import DataError
from norton_core.extract.subtitles import captions_from_subtitles, deduplicate, parse_cues, video_id

#: YouTube automatic captions as served: each cue shows the previous line again, 10 ms transition cues repeat a
#: line alone, lines carry word-timing tags, and lines of one space sit inside cues
YOUTUBE_VTT = """WEBVTT
Kind: captions
Language: en

00:00:00.000 --> 00:00:02.500 align:start position:0%
~
so<00:00:00.400><c> today</c><00:00:00.800><c> we</c>

00:00:02.500 --> 00:00:02.510 align:start position:0%
so today we
~

00:00:02.510 --> 00:00:05.000 align:start position:0%
so today we
are<00:00:03.000><c> making</c><00:00:03.500><c> bread</c>

00:00:05.000 --> 00:00:05.010 align:start position:0%
are making bread
~

00:00:05.010 --> 00:00:07.000 align:start position:0%
are making bread
first &amp; foremost
""".replace("~", " ")

SRT = """1
00:00:01,000 --> 00:00:03,000
Hello there.
~~
2
00:00:03,000 --> 00:00:04,500
<i>General</i> Kenobi!

3
00:00:04,500 --> 00:00:06,000
General Kenobi!

4
01:02:03,040 --> 01:02:04,000
two
lines
""".replace("~", " ")


def test_rolling_auto_captions_are_kept_once_with_their_first_time_span():
    assert deduplicate(parse_cues(YOUTUBE_VTT)) == {
        "start": [0.0, 2.51, 5.01],
        "end": [2.51, 5.01, 7.0],  # the transition cues extend the line they repeat by 10 ms
        "text": ["so today we", "are making bread", "first & foremost"],
    }


def test_srt_numbers_markup_repeats_and_hours():
    assert deduplicate(parse_cues(SRT)) == {
        "start": [1.0, 3.0, 3723.04, 3723.04],
        "end": [3.0, 6.0, 3724.0, 3724.0],  # the repeated "General Kenobi!" cue extends the first one
        "text": ["Hello there.", "General Kenobi!", "two", "lines"],
    }


def test_unreadable_timing_names_the_line():
    with pytest.raises(DataError, match=r"x.srt:2: unreadable cue timing '00:01 --> soon'"):
        parse_cues("1\n00:01 --> soon\ntext\n", source="x.srt")


def test_video_ids_drop_the_language_tag():
    assert [video_id(Path(n)) for n in ("abc123.en.vtt", "abc123.en-US.srt", "abc123.vtt", "my.video.final.vtt")] == \
        ["abc123", "abc123", "abc123", "my.video.final"]


def test_two_languages_of_one_video_are_refused(tmp_path):
    (tmp_path / "v.en.vtt").write_text(YOUTUBE_VTT)
    (tmp_path / "v.de.vtt").write_text(YOUTUBE_VTT)
    with pytest.raises(DataError, match="two subtitle files for the video 'v'"):
        captions_from_subtitles(sorted(tmp_path.iterdir()))


def test_norton_captions_writes_the_captions_json_layout(tmp_path, capsys):
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "vid1.en.vtt").write_text(YOUTUBE_VTT)
    (subs / "vid2.srt").write_text(SRT)
    (subs / "vid3.vtt").write_text("WEBVTT\n\n")
    assert main(["captions", str(subs), "--out", str(tmp_path / "raw" / "captions.json")]) == 0
    captions = json.loads((tmp_path / "raw" / "captions.json").read_text())
    assert sorted(captions) == ["vid1", "vid2"]
    assert captions["vid1"]["text"] == ["so today we", "are making bread", "first & foremost"]
    err = capsys.readouterr().err
    assert "captions: 2 videos, 7 caption lines" in err and "left out 1 subtitle files without any cue text: vid3" in err
