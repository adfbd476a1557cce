-- Scalar macros shared by the warehouse SQL and the online feature path (temporary: per connection).
CREATE OR REPLACE TEMP MACRO haversine_km(lat1, long1, lat2, long2) AS
    2 * 6371.0088 * asin(sqrt(
        pow(sin(radians(lat2 - lat1) / 2), 2)
        + cos(radians(lat1)) * cos(radians(lat2)) * pow(sin(radians(long2 - long1) / 2), 2)
    ));
