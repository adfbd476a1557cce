"""Word lists for synthetic people and merchants (first and last names, streets, jobs).

Real data is not ASCII: some names are spelled with their accents, and a few in their own
script (Hangul, Han, Devanagari), so that a share of cardholders and merchants (whose names
are made of last names) carry accented and non-Latin text through ingestion and serving."""

from __future__ import annotations

FEMALE_FIRST_NAMES: tuple[str, ...] = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica",
    "Sarah", "Karen", "Lisa", "Nancy", "Betty", "Sandra", "Margaret", "Ashley", "Kimberly",
    "Emily", "Donna", "Michelle", "Carol", "Amanda", "Melissa", "Deborah", "Stephanie",
    "Rebecca", "Sharon", "Laura", "Cynthia", "Kathleen", "Amy", "Angela", "Shirley", "Anna",
    "Brenda", "Pamela", "Emma", "Nicole", "Helen", "Samantha", "Katherine", "Christine",
    "Debra", "Rachel", "Carolyn", "Janet", "Catherine", "María", "Heather", "Diane", "Julie",
    "Joyce", "Victoria", "Olivia", "Kelly", "Christina", "Lauren", "Joan", "Evelyn", "Judith",
)  # fmt: skip

MALE_FIRST_NAMES: tuple[str, ...] = (
    "James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas",
    "Charles", "Christopher", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven",
    "Paul", "Andrew", "Joshua", "Kenneth", "Kevin", "Brian", "George", "Timothy", "Ronald",
    "Edward", "Jason", "Jeffrey", "Ryan", "Jacob", "Gary", "Nicholas", "Eric", "Jonathan",
    "Stephen", "Larry", "Justin", "Scott", "Brandon", "Benjamin", "Samuel", "Gregory",
    "Alexander", "Frank", "Patrick", "Raymond", "Jack", "Dennis", "Jerry", "Tyler", "Aaron",
    "José", "Adam", "Nathan", "Henry", "Douglas", "Zachary", "Peter", "Kyle",
)  # fmt: skip

LAST_NAMES: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "García", "Miller", "Davis", "Rodríguez",
    "Martínez", "Hernández", "López", "González", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "李", "Pérez", "Thompson", "White", "Harris", "Sánchez",
    "Clark", "Ramírez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Torres", "Nguyễn", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall",
    "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Gómez", "Phillips", "Evans",
    "Turner", "Díaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes", "Stewart", "Morris",
    "Morales", "Murphy", "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper", "Peterson",
    "Bailey", "Reed", "Kelly", "Howard", "Ramos", "김", "Cox", "Ward", "Richardson", "Watson",
    "Brooks", "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes",
    "Price", "Álvarez", "Castillo", "Sanders", "पटेल", "Myers", "Long", "Ross", "Foster",
    "Jiménez", "O'Brien", "Kub", "Hahn", "Marvin", "Stokes", "Kling", "Bauch", "Heller",
    "Langosh", "Schumm", "Bahringer", "Koss", "Rau", "Kühn", "Gerlach", "Lockman", "Fisher",
    "Quigley", "Keebler", "Haley", "Kutch", "Larkin", "Wiza", "Ziemann", "Bode", "Cormier",
)  # fmt: skip

STREET_NAMES: tuple[str, ...] = (
    "Oak", "Maple", "Cedar", "Pine", "Elm", "Washington", "Lake", "Hill", "Park", "Main",
    "Church", "High", "Mill", "Spring", "River", "Sunset", "Forest", "Meadow", "Ridge",
    "Valley", "Highland", "Lincoln", "Jefferson", "Madison", "Franklin", "Jackson", "Walnut",
    "Chestnut", "Willow", "Birch", "Cherry", "Dogwood", "Magnolia", "Laurel", "Aspen", "Perry",
    "Harbor", "Bay", "Summit", "Prairie", "Canyon", "Brook", "Orchard", "Garden", "Grove",
    "Heritage", "Liberty", "Union", "Center", "Quail",
)  # fmt: skip

STREET_SUFFIXES: tuple[str, ...] = (
    "Street", "Avenue", "Road", "Lane", "Drive", "Court", "Place", "Way", "Boulevard", "Cove",
    "Terrace", "Circle", "Trail", "Parkway",
)  # fmt: skip

# Some jobs carry a comma, as in the public data set, so CSV quoting is exercised.
JOBS: tuple[str, ...] = (
    "Accountant", "Architect", "Barista", "Bus driver", "Carpenter", "Chef",
    "Civil engineer", "Data scientist", "Dentist", "Electrician", "Firefighter",
    "Graphic designer", "Hairdresser", "Insurance broker", "Journalist", "Lawyer", "Librarian",
    "Mechanic", "Nurse", "Paramedic", "Pharmacist", "Photographer", "Physiotherapist",
    "Pilot, airline", "Plumber", "Police officer", "Psychologist, clinical", "Real estate agent",
    "Retail manager", "Sales executive", "Scientist, research (maths)", "Social worker",
    "Software engineer", "Teacher, primary school", "Teacher, secondary school",
    "Engineer, mining", "Designer, ceramics/pottery", "Translator", "Veterinary surgeon",
    "Web developer", "Warehouse operative", "Surveyor, land/geomatics", "Optician",
    "Musician", "Farmer", "Economist", "Editor, magazine features", "Estate manager",
    "IT consultant", "Logistics manager", "Marketing manager", "Midwife", "Personal trainer",
    "Radiographer, diagnostic", "Research officer, trade union", "Retired", "Student",
    "Tour manager", "Waiter", "Writer",
)  # fmt: skip

#: Merchant name patterns over last names, by how many names they take (1, 2 or 3); the
#: three-name pattern carries a comma, so those names are quoted in CSV.
MERCHANT_NAME_PATTERNS: tuple[tuple[str, ...], ...] = (
    ("{a} Ltd", "{a} LLC", "{a} Inc", "{a} Group", "{a} PLC", "{a} and Sons", "{a} Co"),
    ("{a}-{b}", "{a} & {b}", "{a}-{b} Inc", "{a} and {b} LLC", "{a}-{b} Group", "{a} & {b} Co",
     "{a} {b} Ltd", "{a}-{b} PLC"),
    ("{a}, {b} and {c}",),
)  # fmt: skip
#: How often a merchant name takes 1, 2 or 3 last names.
MERCHANT_NAME_SIZE_SHARE = (0.15, 0.77, 0.08)
