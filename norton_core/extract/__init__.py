"""From video files to per-second features (``norton extract``) and from subtitles to captions."""
