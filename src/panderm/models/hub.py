"""Reaching the Hugging Face hub: one short probe, then the local cache.

Without a network, huggingface_hub retries each request with back-off (close to a minute for one model, every
retry logged) before it falls back to the cache. Here the hub is asked once per process with a short
timeout (``PANDERM_HUB_TIMEOUT`` seconds, default 3); when it does not answer, or ``HF_HUB_OFFLINE=1`` is set,
files come from the local HF cache only, and a file that is not there is one error line naming the cache
folder and ``HF_HUB_OFFLINE=1``.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

_PROBED: dict[str, bool] = {}


def endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def cache_dir() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def offline_env() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set to a true value."""
    from huggingface_hub import constants

    truthy = {"1", "true", "yes", "on"}
    return bool(constants.HF_HUB_OFFLINE) or any(
        os.environ.get(name, "").strip().lower() in truthy for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _probe(url: str, timeout: float) -> bool:
    """One HTTP request to the hub; any HTTP answer (even an error status) means it is reachable."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(url.rstrip("/") + "/api/whoami-v2", method="HEAD"),
                               timeout=timeout).close()
        return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused / reset connections, a malformed endpoint
        log.debug("hub probe %s failed: %s", url, exc)
        return False
    except Exception as exc:  # http.client oddities (a server that closes the connection): not reachable
        log.debug("hub probe %s failed: %r", url, exc)
        return False


def cache_only() -> bool:
    """True when files must come from the local cache: HF_HUB_OFFLINE=1, or the hub did not answer one probe."""
    if offline_env():
        return True
    url = endpoint()
    if url not in _PROBED:
        try:
            timeout = float(os.environ.get("PANDERM_HUB_TIMEOUT", "3"))
        except ValueError:
            timeout = 3.0
        _PROBED[url] = _probe(url, timeout)
        if not _PROBED[url]:
            # The rest of this process asks the hub no more (huggingface_hub's own look-ups, transformers).
            from huggingface_hub import constants

            constants.HF_HUB_OFFLINE = True
            log.warning("the Hugging Face hub (%s) cannot be reached: using the local HF cache (%s) only; set "
                        "HF_HUB_OFFLINE=1 to skip this check", url, cache_dir())
    return not _PROBED[url]


def not_cached_message(what: str) -> str:
    """'<what> is not in the local HF cache (...) and ...': the way out for a model that is not cached."""
    if _PROBED.get(endpoint()) is False:
        why = f"the hub ({endpoint()}) cannot be reached"
    elif offline_env():
        why = "HF_HUB_OFFLINE=1 is set (the hub is not asked)"
    else:
        why = f"the hub ({endpoint()}) cannot be reached"
    return (f"{what} is not in the local HF cache ({cache_dir()}) and {why}: download it once with network "
            "access (afterwards HF_HUB_OFFLINE=1 loads it from the cache without asking the hub), "
            "or use local-dir:PATH")


def cache_only_for(repo: str) -> bool:
    """`cache_only()` for a transformers model id; a local folder never asks the hub."""
    from pathlib import Path

    if Path(repo).expanduser().is_dir():
        return False
    return cache_only()


def is_cached(repo: str, filename: str = "config.json") -> bool:
    """Whether `repo`'s `filename` is in the local HF cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo, filename), str)
    except Exception:  # a malformed repo id: not cached
        return False
