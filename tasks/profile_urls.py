"""The profile at the auth API's path, `api/auth/profile` (slash-optional: taskmgmt.urls).

Routed as accounts.urls routes the rest of `auth/` (same URL name, account-profile),
but here: it shows the node's tasks, and accounts imports nothing from tasks.
"""

from rest_framework.routers import SimpleRouter

from tasks.views import ProfileViewSet

router = SimpleRouter(trailing_slash=False)
router.register("", ProfileViewSet, basename="account")

urlpatterns = router.urls
