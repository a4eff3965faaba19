"""The original system's auth paths under `api/auth/` (slash-optional: taskmgmt.urls)."""

from rest_framework.routers import SimpleRouter

from accounts.views import AccountViewSet, TokenViewSet

router = SimpleRouter(trailing_slash=False)
router.register("", TokenViewSet, basename="auth")
router.register("", AccountViewSet, basename="account")

urlpatterns = router.urls
