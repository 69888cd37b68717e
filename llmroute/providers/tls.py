"""TLS settings for an upstream: which certificates to trust, and how a failure reads."""

from __future__ import annotations

import logging
import ssl

log = logging.getLogger("llmroute")


def client_context(*, ca_bundle: str | None = None, verify: bool = True) -> ssl.SSLContext:
    """The system's CAs, plus ``ca_bundle``'s (a private CA adds to what is trusted, it does not replace it).

    ``verify=False`` accepts any certificate for any host, for a lab endpoint only (the provider warns
    about it when it is built, at start-up).
    """
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def warn_unverified(name: str) -> None:
    log.warning("TLS VERIFICATION IS OFF for provider %s (tls_verify: false): any certificate is accepted, "
                "so anyone on the path can read and change its traffic, API key included", name)


def describe(exc: ssl.SSLError) -> str:
    """'certificate verify failed: self-signed certificate' rather than 'CERTIFICATE_VERIFY_FAILED'."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    reason = exc.reason or exc.__class__.__name__
    return reason.replace("_", " ").lower() if reason.isupper() else reason
