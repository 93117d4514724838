"""The webhook's TLS certificates: made with ``cryptography``, checked, kept in a Secret, rotated.

Modules: :mod:`certs.pki` (ECDSA P-256 CA, serving and client certificates), :mod:`certs.check`
(every problem with a certificate, key or bundle, naming the file and the fix), :mod:`certs.rotation`
(the pure rotation decisions), :mod:`certs.rotator` (the async shell run in every webhook replica),
:mod:`certs.files` (atomic publishing in a mounted Secret's layout), :mod:`certs.cli`
(``agentgroup certs generate|check`` and the webhook's certificate flags).

Modes, chosen by the chart: ``self-managed`` (default; the rotator keeps CA and serving certificate
in one Secret and the caBundle true), ``cert-manager`` (cert-manager issues, its cainjector injects)
and ``secret`` (a Secret you provide). Outside self-managed mode the rotator does nothing.
"""
