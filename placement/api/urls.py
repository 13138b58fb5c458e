from django.urls import path

from placement.api import views

urlpatterns = [
    path("quote", views.QuoteView.as_view(), name="placement-quote"),
    path("offers", views.OfferListView.as_view(), name="placement-offer-list"),
    path("offers/<int:offer_id>", views.OfferDetailView.as_view(), name="placement-offer-detail"),
]
