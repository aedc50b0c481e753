"""Allow ``python -m whatsapp_daemon``."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
