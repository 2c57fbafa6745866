"""The sample catalog loaded by `atelier seed`: real artists across eras, countries and genres, with facts
written for Atelier (names, years and works are public record)."""

from __future__ import annotations

from typing import Any

SAMPLE_ARTISTS: list[dict[str, Any]] = [
    {
        "name": "Édith Piaf",
        "kind": "person",
        "country": "France",
        "genres": ["chanson", "cabaret"],
        "active_from": 1935,
        "active_to": 1963,
        "notable_works": ["La Vie en rose", "Non, je ne regrette rien", "Hymne à l'amour", "Milord"],
        "notes": (
            "Born Édith Gassion in Paris in 1915, she was discovered singing on the street in 1935 by the "
            "nightclub owner Louis Leplée, who billed her as La Môme Piaf. She became the defining voice of "
            "French chanson and performed until shortly before her death in 1963."
        ),
    },
    {
        "name": "Louis Armstrong",
        "kind": "person",
        "country": "United States",
        "genres": ["jazz", "swing"],
        "active_from": 1922,
        "active_to": 1971,
        "notable_works": [
            "West End Blues",
            "Heebie Jeebies",
            "Ella and Louis",
            "Hello, Dolly!",
            "What a Wonderful World",
        ],
        "notes": (
            "Born in New Orleans in 1901, the trumpeter and singer joined King Oliver's Creole Jazz Band in "
            "Chicago in 1922. His Hot Five and Hot Seven recordings of 1925 to 1928 made the improvised solo "
            "central to jazz, and in 1964 Hello, Dolly! knocked the Beatles from the top of the US chart."
        ),
    },
    {
        "name": "Umm Kulthum",
        "kind": "person",
        "country": "Egypt",
        "genres": ["arabic classical", "tarab"],
        "active_from": 1923,
        "active_to": 1973,
        "notable_works": ["Enta Omri", "Al-Atlal", "Alf Leila wa Leila", "Amal Hayati"],
        "notes": (
            "Raised in a village in the Nile Delta, she moved to Cairo in the 1920s and became the most "
            "celebrated singer of the Arab world, known as the Star of the East. Her monthly concerts, often "
            "lasting for hours, were broadcast on radio across the region, and millions attended her funeral "
            "in Cairo in 1975."
        ),
    },
    {
        "name": "Billie Holiday",
        "kind": "person",
        "country": "United States",
        "genres": ["jazz", "blues", "swing"],
        "active_from": 1933,
        "active_to": 1959,
        "notable_works": ["Strange Fruit", "God Bless the Child", "Lady Sings the Blues", "Lady in Satin"],
        "notes": (
            "Born Eleanora Fagan in Philadelphia in 1915, she made her first recordings in 1933 with Benny "
            "Goodman and was nicknamed Lady Day by the saxophonist Lester Young. Her 1939 recording of "
            "Strange Fruit, a protest against lynching, became one of the most important songs of the "
            "century."
        ),
    },
    {
        "name": "Ravi Shankar",
        "kind": "person",
        "country": "India",
        "genres": ["classical", "hindustani classical", "world"],
        "active_from": 1939,
        "active_to": 2012,
        "notable_works": [
            "Pather Panchali",
            "West Meets East",
            "The Concert for Bangladesh",
            "Chants of India",
        ],
        "notes": (
            "The sitar virtuoso trained under Allauddin Khan and brought Hindustani classical music to "
            "Western audiences, playing at the Monterey Pop Festival in 1967 and at Woodstock in 1969. He "
            "taught George Harrison, with whom he organised the Concert for Bangladesh in 1971, and received "
            "the Bharat Ratna in 1999."
        ),
    },
    {
        "name": "Astor Piazzolla",
        "kind": "person",
        "country": "Argentina",
        "genres": ["tango", "nuevo tango", "classical"],
        "active_from": 1939,
        "active_to": 1990,
        "notable_works": ["Adiós Nonino", "Verano porteño", "Balada para un loco", "Libertango", "Oblivion"],
        "notes": (
            "Born in Mar del Plata in 1921 and partly raised in New York, the bandoneon player joined Aníbal "
            "Troilo's orchestra as a young man. After studying with Nadia Boulanger in Paris in the 1950s he "
            "created nuevo tango, blending tango with classical and jazz elements."
        ),
    },
    {
        "name": "Miles Davis",
        "kind": "person",
        "country": "United States",
        "genres": ["jazz", "cool jazz", "jazz fusion"],
        "active_from": 1944,
        "active_to": 1991,
        "notable_works": [
            "Birth of the Cool",
            "'Round About Midnight",
            "Kind of Blue",
            "Sketches of Spain",
            "Bitches Brew",
        ],
        "notes": (
            "Born in Alton, Illinois, in 1926, the trumpeter played with Charlie Parker in the bebop era "
            "before leading a string of influential bands. Kind of Blue (1959) is the best-selling jazz "
            "album of all time, and Bitches Brew (1970) helped launch jazz fusion."
        ),
    },
    {
        "name": "Celia Cruz",
        "kind": "person",
        "country": "Cuba",
        "genres": ["salsa", "latin"],
        "active_from": 1950,
        "active_to": 2003,
        "notable_works": [
            "Burundanga",
            "Quimbara",
            "Usted abusó",
            "La vida es un carnaval",
            "La negra tiene tumbao",
        ],
        "notes": (
            "Born in Havana in 1925, she became the lead singer of La Sonora Matancera in 1950 and left Cuba "
            "for good in 1960. Recording with the Fania All-Stars and Johnny Pacheco, she was hailed as the "
            "Queen of Salsa."
        ),
    },
    {
        "name": "Jacques Brel",
        "kind": "person",
        "country": "Belgium",
        "genres": ["chanson"],
        "active_from": 1953,
        "active_to": 1977,
        "notable_works": [
            "Quand on n'a que l'amour",
            "Ne me quitte pas",
            "Le Plat Pays",
            "Amsterdam",
            "Les Marquises",
        ],
        "notes": (
            "Born in Brussels in 1929, he moved to Paris in 1953 to pursue a singing career and became one "
            "of the great writers of French-language song. He gave up the concert stage in 1967, later "
            "settled in the Marquesas Islands and returned to Paris in 1977 to record a final album, before "
            "his death in 1978."
        ),
    },
    {
        "name": "Johnny Cash",
        "kind": "person",
        "country": "United States",
        "genres": ["country", "rockabilly", "folk", "gospel"],
        "active_from": 1954,
        "active_to": 2003,
        "notable_works": [
            "Folsom Prison Blues",
            "I Walk the Line",
            "Ring of Fire",
            "At Folsom Prison",
            "Hurt",
        ],
        "notes": (
            "Born in Kingsland, Arkansas, in 1932, he began recording for Sun Records in Memphis in the mid "
            "1950s. His 1968 live album At Folsom Prison revived his career, and his American Recordings "
            "albums with producer Rick Rubin won him a new audience late in life."
        ),
    },
    {
        "name": "Miriam Makeba",
        "kind": "person",
        "country": "South Africa",
        "genres": ["world", "jazz", "folk"],
        "active_from": 1954,
        "active_to": 2008,
        "notable_works": ["Pata Pata", "The Click Song", "Malaika", "An Evening with Belafonte/Makeba"],
        "notes": (
            "Born in Johannesburg in 1932, she first toured with the Manhattan Brothers in the 1950s. After "
            "appearing in the anti-apartheid film Come Back, Africa she lived in exile for three decades, "
            "became known as Mama Africa and returned home in 1990."
        ),
    },
    {
        "name": "Nina Simone",
        "kind": "person",
        "country": "United States",
        "genres": ["jazz", "soul", "blues"],
        "active_from": 1954,
        "active_to": 2003,
        "notable_works": [
            "Little Girl Blue",
            "I Loves You, Porgy",
            "Mississippi Goddam",
            "Feeling Good",
            "Four Women",
        ],
        "notes": (
            "Born Eunice Waymon in Tryon, North Carolina, in 1933, she trained as a classical pianist before "
            "taking the stage name Nina Simone to play bars in Atlantic City. In the 1960s she became a "
            "voice of the civil rights movement, and she spent her final years in France, where she died in "
            "2003."
        ),
    },
    {
        "name": "Aretha Franklin",
        "kind": "person",
        "country": "United States",
        "genres": ["soul", "gospel", "r&b"],
        "active_from": 1956,
        "active_to": 2018,
        "notable_works": [
            "I Never Loved a Man the Way I Love You",
            "Respect",
            "Chain of Fools",
            "Think",
            "Amazing Grace",
        ],
        "notes": (
            "Born in Memphis in 1942 and raised in Detroit, she first recorded gospel songs in her father's "
            "church as a teenager. Her run of hits on Atlantic Records from 1967 earned her the title Queen "
            "of Soul, and in 1987 she became the first woman inducted into the Rock and Roll Hall of Fame."
        ),
    },
    {
        "name": "Cesária Évora",
        "kind": "person",
        "country": "Cape Verde",
        "genres": ["morna", "world"],
        "active_from": 1957,
        "active_to": 2011,
        "notable_works": ["La Diva aux pieds nus", "Miss Perfumado", "Sodade", "Cesária", "Voz d'Amor"],
        "notes": (
            "Born in Mindelo on the island of São Vicente in 1941, she sang in the port's bars from her "
            "teens but only recorded her first international album in 1988, in her late forties. Known as "
            "the Barefoot Diva and the Queen of Morna, she won a Grammy in 2004 for Voz d'Amor."
        ),
    },
    {
        "name": "Fela Kuti",
        "kind": "person",
        "country": "Nigeria",
        "genres": ["afrobeat", "funk", "jazz", "highlife"],
        "active_from": 1958,
        "active_to": 1997,
        "notable_works": ["Lady", "Gentleman", "Expensive Shit", "Water No Get Enemy", "Zombie"],
        "notes": (
            "Born in Abeokuta in 1938, he studied at Trinity College of Music in London and later pioneered "
            "Afrobeat with his band Africa 70, fusing highlife, jazz and funk. His Kalakuta Republic "
            "compound in Lagos and his songs made him a fierce critic of Nigeria's military governments."
        ),
    },
    {
        "name": "The Beatles",
        "kind": "group",
        "country": "United Kingdom",
        "genres": ["rock", "pop"],
        "active_from": 1960,
        "active_to": 1970,
        "notable_works": [
            "Please Please Me",
            "Revolver",
            "Sgt. Pepper's Lonely Hearts Club Band",
            "Hey Jude",
            "Abbey Road",
        ],
        "notes": (
            "Formed in Liverpool, the band settled on John Lennon, Paul McCartney, George Harrison and Ringo "
            "Starr in 1962. They led the British Invasion of the United States in 1964, turned to studio "
            "experimentation in their later years and split in 1970."
        ),
    },
    {
        "name": "Stevie Wonder",
        "kind": "person",
        "country": "United States",
        "genres": ["soul", "funk", "r&b", "pop"],
        "active_from": 1961,
        "active_to": None,
        "notable_works": [
            "Fingertips",
            "Talking Book",
            "Innervisions",
            "Superstition",
            "Songs in the Key of Life",
        ],
        "notes": (
            "Born in Saginaw, Michigan, in 1950 and blind from infancy, he signed to Motown as a child and "
            "had a number one hit at 13 with Fingertips. His 1970s albums Innervisions, Fulfillingness' "
            "First Finale and Songs in the Key of Life each won the Grammy for Album of the Year."
        ),
    },
    {
        "name": "David Bowie",
        "kind": "person",
        "country": "United Kingdom",
        "genres": ["rock", "pop", "glam rock", "art rock"],
        "active_from": 1962,
        "active_to": 2016,
        "notable_works": [
            "Space Oddity",
            "Hunky Dory",
            "The Rise and Fall of Ziggy Stardust and the Spiders from Mars",
            "Low",
            "Let's Dance",
            "Blackstar",
        ],
        "notes": (
            "Born David Jones in Brixton, London, in 1947, he reinvented himself repeatedly, from the Ziggy "
            "Stardust persona of 1972 to the Berlin-era albums made with Brian Eno. His final album, "
            "Blackstar, was released two days before his death in January 2016."
        ),
    },
    {
        "name": "Bob Marley and the Wailers",
        "kind": "group",
        "country": "Jamaica",
        "genres": ["reggae", "ska"],
        "active_from": 1963,
        "active_to": 1981,
        "notable_works": ["Catch a Fire", "Burnin'", "Natty Dread", "Exodus", "Redemption Song"],
        "notes": (
            "Formed in Kingston in 1963 by Bob Marley, Peter Tosh and Bunny Wailer, the group moved from ska "
            "to reggae and signed to Island Records for Catch a Fire in 1973. Marley led the band after Tosh "
            "and Bunny Wailer left in 1974, until his death in 1981."
        ),
    },
    {
        "name": "Joni Mitchell",
        "kind": "person",
        "country": "Canada",
        "genres": ["folk", "pop", "jazz"],
        "active_from": 1964,
        "active_to": None,
        "notable_works": ["Both Sides, Now", "Big Yellow Taxi", "Blue", "Court and Spark", "Hejira"],
        "notes": (
            "Born Roberta Joan Anderson in Fort Macleod, Alberta, in 1943, she began on the Canadian folk "
            "club circuit before moving to the United States. Her 1971 album Blue is counted among the "
            "finest singer-songwriter records, and she later moved towards jazz, working with Charles "
            "Mingus."
        ),
    },
    {
        "name": "Kraftwerk",
        "kind": "group",
        "country": "Germany",
        "genres": ["electronic", "synth-pop", "krautrock"],
        "active_from": 1970,
        "active_to": None,
        "notable_works": [
            "Autobahn",
            "Radio-Activity",
            "Trans-Europe Express",
            "The Man-Machine",
            "Computer World",
        ],
        "notes": (
            "Founded in Düsseldorf in 1970 by Ralf Hütter and Florian Schneider, the group built much of its "
            "music in its own Kling Klang studio. Autobahn (1974) was an international breakthrough, and "
            "their machine-made sound shaped synth-pop, hip hop and techno."
        ),
    },
    {
        "name": "ABBA",
        "kind": "group",
        "country": "Sweden",
        "genres": ["pop", "disco"],
        "active_from": 1972,
        "active_to": None,
        "notable_works": ["Waterloo", "Mamma Mia", "Dancing Queen", "The Winner Takes It All", "Voyage"],
        "notes": (
            "The Stockholm quartet of Agnetha Fältskog, Björn Ulvaeus, Benny Andersson and Anni-Frid "
            "Lyngstad won the Eurovision Song Contest in 1974 with Waterloo. They stopped recording in 1982 "
            "and returned with the album Voyage in 2021."
        ),
    },
    {
        "name": "Youssou N'Dour",
        "kind": "person",
        "country": "Senegal",
        "genres": ["mbalax", "world", "pop"],
        "active_from": 1972,
        "active_to": None,
        "notable_works": ["Immigrés", "Set", "The Guide (Wommat)", "7 Seconds", "Egypt"],
        "notes": (
            "Born in Dakar in 1959, he sang with the Star Band as a teenager before leading Étoile de Dakar "
            "and then Super Étoile de Dakar, popularising mbalax worldwide. His album Egypt won a Grammy, "
            "and in 2012 he became Senegal's minister of culture and tourism."
        ),
    },
    {
        "name": "Ali Farka Touré",
        "kind": "person",
        "country": "Mali",
        "genres": ["blues", "world"],
        "active_from": 1976,
        "active_to": 2006,
        "notable_works": ["Talking Timbuktu", "Niafunké", "In the Heart of the Moon", "Savane"],
        "notes": (
            "Born in 1939 on the banks of the Niger in northern Mali, the guitarist drew links between "
            "Songhai music and American blues. His collaborations with Ry Cooder and Toumani Diabaté both "
            "won Grammys, and he served as mayor of Niafunké, where he farmed, before his death in 2006."
        ),
    },
    {
        "name": "Björk",
        "kind": "person",
        "country": "Iceland",
        "genres": ["pop", "electronic", "experimental"],
        "active_from": 1977,
        "active_to": None,
        "notable_works": ["Debut", "Post", "Homogenic", "Vespertine", "Hyperballad"],
        "notes": (
            "Born in Reykjavík in 1965, she released her first album as a child and later fronted the "
            "Sugarcubes before going solo with Debut in 1993. She also won the best actress award at Cannes "
            "for Lars von Trier's Dancer in the Dark in 2000."
        ),
    },
    {
        "name": "Ryuichi Sakamoto",
        "kind": "person",
        "country": "Japan",
        "genres": ["electronic", "classical", "film score"],
        "active_from": 1978,
        "active_to": 2023,
        "notable_works": ["Thousand Knives", "Merry Christmas, Mr. Lawrence", "The Last Emperor", "async"],
        "notes": (
            "In 1978 he released his solo debut and co-founded Yellow Magic Orchestra with Haruomi Hosono "
            "and Yukihiro Takahashi. His score for The Last Emperor, shared with David Byrne and Cong Su, "
            "won an Academy Award, and he kept composing until his death in 2023."
        ),
    },
    {
        "name": "Radiohead",
        "kind": "group",
        "country": "United Kingdom",
        "genres": ["rock", "alternative rock", "electronic"],
        "active_from": 1985,
        "active_to": None,
        "notable_works": ["Creep", "The Bends", "OK Computer", "Kid A", "In Rainbows"],
        "notes": (
            "Formed as On a Friday by school friends in Abingdon, Oxfordshire, in 1985, the band took the "
            "name Radiohead on signing to EMI in 1991. After the acclaim for OK Computer (1997) they moved "
            "towards electronic textures on Kid A, and released In Rainbows in 2007 as a pay-what-you-want "
            "download."
        ),
    },
    {
        "name": "Daft Punk",
        "kind": "group",
        "country": "France",
        "genres": ["electronic", "house", "dance"],
        "active_from": 1993,
        "active_to": 2021,
        "notable_works": [
            "Homework",
            "Around the World",
            "Discovery",
            "One More Time",
            "Random Access Memories",
        ],
        "notes": (
            "Thomas Bangalter and Guy-Manuel de Homem-Christo formed the duo in Paris in 1993 and became the "
            "leading act of French house, performing in robot helmets. Random Access Memories won the Grammy "
            "for Album of the Year, and the pair announced their split in 2021."
        ),
    },
    {
        "name": "Sigur Rós",
        "kind": "group",
        "country": "Iceland",
        "genres": ["post-rock", "ambient", "rock"],
        "active_from": 1994,
        "active_to": None,
        "notable_works": ["Svefn-g-englar", "Ágætis byrjun", "Takk...", "Hoppípolla"],
        "notes": (
            "Formed in Reykjavík in 1994, the band is known for singer and guitarist Jónsi's falsetto and "
            "his guitar played with a cello bow. Some of their songs are sung in Vonlenska, or Hopelandic, "
            "an invented language of wordless syllables."
        ),
    },
    {
        "name": "Buena Vista Social Club",
        "kind": "group",
        "country": "Cuba",
        "genres": ["son cubano", "latin", "world"],
        "active_from": 1996,
        "active_to": None,
        "notable_works": [
            "Buena Vista Social Club",
            "Chan Chan",
            "Dos Gardenias",
            "El Cuarto de Tula",
            "Candela",
        ],
        "notes": (
            "Assembled in Havana in 1996 by Juan de Marcos González and Ry Cooder, the ensemble brought "
            "veteran musicians such as Compay Segundo, Ibrahim Ferrer, Rubén González and Omara Portuondo "
            "back to the studio. Their 1997 album won a Grammy, and Wim Wenders filmed them in a 1999 "
            "documentary."
        ),
    },
    {
        "name": "Kendrick Lamar",
        "kind": "person",
        "country": "United States",
        "genres": ["hip hop"],
        "active_from": 2003,
        "active_to": None,
        "notable_works": [
            "Section.80",
            "good kid, m.A.A.d city",
            "To Pimp a Butterfly",
            "Alright",
            "DAMN.",
        ],
        "notes": (
            "Born in Compton, California, in 1987, he released mixtapes as K.Dot as a teenager before his "
            "breakthrough album good kid, m.A.A.d city in 2012. In 2018 DAMN. made him the first musician "
            "outside classical music and jazz to win the Pulitzer Prize for Music."
        ),
    },
    {
        "name": "Rosalía",
        "kind": "person",
        "country": "Spain",
        "genres": ["flamenco", "pop", "latin"],
        "active_from": 2013,
        "active_to": None,
        "notable_works": ["Los Ángeles", "El mal querer", "Malamente", "Con altura", "Motomami"],
        "notes": (
            "The Catalan singer studied flamenco at the Catalonia College of Music and debuted with Los "
            "Ángeles in 2017, recorded with guitarist Raül Refree. El mal querer (2018) fused flamenco with "
            "pop and urban production and won the Latin Grammy for Album of the Year, as did Motomami in "
            "2022."
        ),
    },
]
