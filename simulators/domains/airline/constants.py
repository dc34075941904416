"""Facts of the airline domain, stated once: the generator, the tools and the rules read them from here."""

from datetime import datetime, timedelta

# The benchmark's fixed "now" (EST). Flights before it have flown; every booking is stamped with it.
NOW = datetime(2024, 5, 15, 15, 0, 0)
BOOKING_TIME = NOW.isoformat()
# A booking made after this moment is within 24 hours and may be cancelled for any reason.
DAY_BEFORE_NOW = (NOW - timedelta(days=1)).isoformat()

# Reservation ids: six of these characters. tau-bench hands out the three booking ids in turn (it assumes
# at most three bookings per episode); once all are taken the last one is reused and the older record is
# overwritten. Generated reservations never take them.
RESERVATION_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
RESERVATION_ID_LENGTH = 6
BOOKING_IDS = ("HATHAT", "HATHAU", "HATHAV")
# Compensation certificates get one of these ids per user; there is no fourth. Generated users never hold them.
CERTIFICATE_IDS = ("certificate_3221322", "certificate_3221323", "certificate_3221324")

# Checked bags free per passenger, by the booking user's membership and the cabin.
FREE_BAGS = {
    "regular": {"basic_economy": 0, "economy": 1, "business": 2},
    "silver": {"basic_economy": 1, "economy": 2, "business": 3},
    "gold": {"basic_economy": 2, "economy": 3, "business": 3},
}
INSURANCE_FEE_PER_PASSENGER = 30
NONFREE_BAG_FEE = 50

# Airports served: IATA code -> (city, latitude, longitude), in the order list_all_airports reports them
# (tau-bench's fixed table); the generator lays out routes by the coordinates.
AIRPORTS = {
    "SFO": ("San Francisco", 37.62, -122.38),
    "JFK": ("New York", 40.64, -73.78),
    "LAX": ("Los Angeles", 33.94, -118.41),
    "ORD": ("Chicago", 41.97, -87.91),
    "DFW": ("Dallas", 32.90, -97.04),
    "DEN": ("Denver", 39.86, -104.67),
    "SEA": ("Seattle", 47.45, -122.31),
    "ATL": ("Atlanta", 33.64, -84.43),
    "MIA": ("Miami", 25.79, -80.29),
    "BOS": ("Boston", 42.36, -71.01),
    "PHX": ("Phoenix", 33.43, -112.01),
    "IAH": ("Houston", 29.98, -95.34),
    "LAS": ("Las Vegas", 36.08, -115.15),
    "MCO": ("Orlando", 28.43, -81.31),
    "EWR": ("Newark", 40.69, -74.17),
    "CLT": ("Charlotte", 35.21, -80.94),
    "MSP": ("Minneapolis", 44.88, -93.22),
    "DTW": ("Detroit", 42.21, -83.35),
    "PHL": ("Philadelphia", 39.87, -75.24),
    "LGA": ("LaGuardia", 40.78, -73.87),
}
