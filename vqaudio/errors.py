"""Errors a user can cause. The CLI prints these as one line and exits non-zero."""


class VQAudioError(Exception):
    """Base of every error that is the user's to fix (file, model, codes, speaker)."""


class UnknownSpeakerError(VQAudioError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
