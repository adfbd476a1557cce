"""US cities that cardholders live in and merchants cluster around, and great-circle distance."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class City(NamedTuple):
    """A city: name, state code, a 5-digit zip code, centre (degrees) and population."""

    name: str
    state: str
    zip: str
    lat: float
    long: float
    population: int


CITIES: tuple[City, ...] = (
    City("New York", "NY", "10001", 40.7128, -74.0060, 8336817),
    City("Los Angeles", "CA", "90012", 34.0522, -118.2437, 3979576),
    City("Chicago", "IL", "60601", 41.8781, -87.6298, 2693976),
    City("Houston", "TX", "77002", 29.7604, -95.3698, 2320268),
    City("Phoenix", "AZ", "85003", 33.4484, -112.0740, 1680992),
    City("Philadelphia", "PA", "19103", 39.9526, -75.1652, 1584064),
    City("San Antonio", "TX", "78205", 29.4241, -98.4936, 1547253),
    City("San Diego", "CA", "92101", 32.7157, -117.1611, 1423851),
    City("Dallas", "TX", "75201", 32.7767, -96.7970, 1343573),
    City("San José", "CA", "95113", 37.3382, -121.8863, 1021795),
    City("Austin", "TX", "78701", 30.2672, -97.7431, 978908),
    City("Jacksonville", "FL", "32202", 30.3322, -81.6557, 911507),
    City("Columbus", "OH", "43215", 39.9612, -82.9988, 898553),
    City("Charlotte", "NC", "28202", 35.2271, -80.8431, 885708),
    City("Indianapolis", "IN", "46204", 39.7684, -86.1581, 876384),
    City("San Francisco", "CA", "94102", 37.7749, -122.4194, 881549),
    City("Seattle", "WA", "98101", 47.6062, -122.3321, 753675),
    City("Denver", "CO", "80202", 39.7392, -104.9903, 727211),
    City("Washington", "DC", "20001", 38.9072, -77.0369, 705749),
    City("Boston", "MA", "02108", 42.3601, -71.0589, 692600),
    City("Nashville", "TN", "37203", 36.1627, -86.7816, 670820),
    City("Detroit", "MI", "48226", 42.3314, -83.0458, 670031),
    City("Portland", "OR", "97204", 45.5152, -122.6784, 654741),
    City("Las Vegas", "NV", "89101", 36.1699, -115.1398, 651319),
    City("Memphis", "TN", "38103", 35.1495, -90.0490, 651073),
    City("Louisville", "KY", "40202", 38.2527, -85.7585, 617638),
    City("Baltimore", "MD", "21202", 39.2904, -76.6122, 593490),
    City("Milwaukee", "WI", "53202", 43.0389, -87.9065, 590157),
    City("Albuquerque", "NM", "87102", 35.0844, -106.6504, 560513),
    City("Tucson", "AZ", "85701", 32.2226, -110.9747, 548073),
    City("Fresno", "CA", "93721", 36.7378, -119.7871, 531576),
    City("Sacramento", "CA", "95814", 38.5816, -121.4944, 513624),
    City("Kansas City", "MO", "64106", 39.0997, -94.5786, 495327),
    City("Atlanta", "GA", "30303", 33.7490, -84.3880, 498044),
    City("Miami", "FL", "33130", 25.7617, -80.1918, 467963),
    City("Omaha", "NE", "68102", 41.2565, -95.9345, 478192),
    City("Raleigh", "NC", "27601", 35.7796, -78.6382, 474069),
    City("Minneapolis", "MN", "55401", 44.9778, -93.2650, 429606),
    City("Tulsa", "OK", "74103", 36.1540, -95.9928, 401190),
    City("Cleveland", "OH", "44113", 41.4993, -81.6944, 381009),
    City("New Orleans", "LA", "70112", 29.9511, -90.0715, 390144),
    City("Tampa", "FL", "33602", 27.9506, -82.4572, 399700),
    City("Pittsburgh", "PA", "15222", 40.4406, -79.9959, 300286),
    City("Cincinnati", "OH", "45202", 39.1031, -84.5120, 303940),
    City("St. Louis", "MO", "63101", 38.6270, -90.1994, 300576),
    City("Salt Lake City", "UT", "84101", 40.7608, -111.8910, 200567),
    City("Boise", "ID", "83702", 43.6150, -116.2023, 228959),
    City("Anchorage", "AK", "99501", 61.2181, -149.9003, 291247),
    City("Honolulu", "HI", "96813", 21.3069, -157.8583, 345064),
    City("Burlington", "VT", "05401", 44.4759, -73.2121, 42819),
    City("Billings", "MT", "59101", 45.7833, -108.5007, 109577),
    City("Des Moines", "IA", "50309", 41.5868, -93.6250, 214237),
)

CITY_LAT = np.array([c.lat for c in CITIES])
CITY_LONG = np.array([c.long for c in CITIES])
#: Weight of a city when placing cardholders and merchants: sub-linear in population, so
#: small cities still get people.
CITY_WEIGHT = np.array([c.population for c in CITIES], dtype=float) ** 0.6
CITY_WEIGHT /= CITY_WEIGHT.sum()

_EARTH_RADIUS_KM = 6371.0


def haversine_km(
    lat1: np.ndarray | float,
    long1: np.ndarray | float,
    lat2: np.ndarray | float,
    long2: np.ndarray | float,
) -> np.ndarray:
    """Great-circle distance in km between points given in degrees (broadcasting)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(long2) - np.asarray(long1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


#: Distance between city centres in km, shape (n_cities, n_cities).
CITY_DISTANCE_KM = haversine_km(
    CITY_LAT[:, None], CITY_LONG[:, None], CITY_LAT[None, :], CITY_LONG[None, :]
)
