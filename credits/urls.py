"""Pages of the credits app under `/o/<org-slug>/` (included by `portal.urls`)."""

urlpatterns: list = []
