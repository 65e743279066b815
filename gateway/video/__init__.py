"""WHIP ingest and WHEP playback (PROTOCOL.md §7); see docs/video.md."""

from __future__ import annotations

from gateway.video.service import VideoContext, VideoService, create_video_service

__all__ = ["VideoContext", "VideoService", "create_video_service"]
