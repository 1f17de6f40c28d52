"""The audit log: an append-only record of sensitive actions, who did them, when and from which address.

Model changes (official accounts, templates, users and groups, webhook endpoints: ``audit.tracked``) are recorded by
django-auditlog into our own log entry model (``AUDITLOG_LOGENTRY_MODEL = "audit.AuditLogEntry"``); the actions it
cannot see (a template sync, a campaign cancelled, secrets re-encrypted, a token read) are recorded into the same table
by :func:`audit.services.record`.  This app sits just above ``wxnotify`` in the import layers so every app can record.
"""
