"""WeChat Official Account API core: HTTP client, access_token manager, callback crypto, error taxonomy.

Nothing in this package may import Django models; callers pass in what it needs.
"""

# WeChat's own API host: the default of settings.WECHAT_API_BASE. Tests and the demo point that setting at the
# sandbox instead; nothing in the test suite may call this host.
PRODUCTION_API_BASE = "https://api.weixin.qq.com"
