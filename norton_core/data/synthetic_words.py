"""The generated world's words: actions, objects, dishes and tasks, and the templates its ASR captions, off-topic
chatter and evaluation sentences are made from (:mod:`.synthetic` draws from them). Fixed lists, so that sets
generated with different seeds share one vocabulary; and the generator's size limits, which the ``synthetic`` data
source declares as its options' bounds (this module imports nothing, so recipes validate without numpy).
"""

from __future__ import annotations

#: the most videos (training, validation, and each evaluation set) one generated dataset may hold: at the default
#: 40-120 s a video's float32 features are ~160 KB, so 100,000 videos are ~16 GB, beyond any demo but bounded
MAX_VIDEOS = 100_000
#: the longest video the generator makes (features of one video: 3600 x 512 float32 = 7 MiB)
MAX_SECONDS = 3600

#: (base form, third person) of each action
ACTIONS = [
    ("chop", "chops"), ("slice", "slices"), ("stir", "stirs"), ("pour", "pours"), ("mix", "mixes"),
    ("fry", "fries"), ("boil", "boils"), ("peel", "peels"), ("wash", "washes"), ("bake", "bakes"),
    ("grate", "grates"), ("season", "seasons"),
]
OBJECTS = [
    "onion", "tomato", "carrot", "potato", "garlic", "chicken", "beef", "rice", "noodles", "sauce",
    "eggs", "butter", "cheese", "flour", "dough", "lettuce", "pepper", "mushrooms", "bread", "shrimp",
]
#: further (base form, third person) actions and objects, used when ``actions`` / ``objects`` ask for more words
MORE_ACTIONS = [
    ("whisk", "whisks"), ("knead", "kneads"), ("roast", "roasts"), ("grill", "grills"), ("steam", "steams"),
    ("simmer", "simmers"), ("drain", "drains"), ("rinse", "rinses"), ("mash", "mashes"), ("blend", "blends"),
    ("fold", "folds"), ("marinate", "marinates"), ("toast", "toasts"), ("sprinkle", "sprinkles"),
    ("squeeze", "squeezes"), ("melt", "melts"), ("spread", "spreads"), ("roll", "rolls"), ("crack", "cracks"),
    ("measure", "measures"),
]
MORE_OBJECTS = [
    "milk", "sugar", "salt", "lemon", "spinach", "beans", "corn", "salmon", "pork", "tofu", "cucumber", "ginger",
    "broth", "yogurt", "oats", "apple", "banana", "cream", "honey", "basil", "parsley", "zucchini", "lentils",
    "pasta", "cabbage", "avocado", "celery", "peas", "sausage", "walnuts",
]
DISHES = ["soup", "salad", "stew", "pie", "curry", "wrap", "bowl", "casserole", "skillet", "sandwich", "tart",
          "risotto"]
TASKS = [
    "tomato soup", "fried rice", "beef stew", "garlic bread", "chicken curry", "vegetable salad",
    "mushroom omelette", "shrimp noodles", "mashed potatoes", "homemade pizza", "cheese pancakes", "pepper stir fry",
]
ASR_TEMPLATES = [
    "now we {a} the {o}", "next, {a} the {o}", "then you want to {a} the {o}", "let's {a} the {o}",
    "go ahead and {a} the {o}", "okay so now i {a} the {o}", "{a} the {o} like this", "after that we {a} the {o}",
]
#: a second ASR style (``caption_templates = "alternate"``): other word order, other filler words
ALT_ASR_TEMPLATES = [
    "the {o} gets a quick {a}", "you'll want to {a} your {o}", "i like to {a} the {o} first", "take the {o} and {a} it",
    "we're going to {a} some {o}", "right, {a} that {o}", "time to {a} the {o}", "just {a} the {o} for a bit",
]
EVAL_TEMPLATES = ["{A} the {o}.", "{A} the {o} carefully.", "{A} the {o} in a bowl."]
MSRVTT_TEMPLATES = ["a person {a3} the {o}", "someone {a3} the {o} in a kitchen", "a cook {a3} the {o}"]
CHATTER = [
    "hey guys welcome back to my channel", "don't forget to like and subscribe", "thanks for watching see you next time",
    "this recipe is from my grandmother", "let me know in the comments what you think", "i hope you enjoy this video",
    "so yeah that's pretty much it", "my kids absolutely love this one", "hit the bell so you don't miss a video",
    "i bought all of this at the local market", "today is a really sunny day here", "sorry about the noise earlier",
]
#: pieces of further chatter lines (``chatter_pool`` above the 12 above): opener + topic
CHATTER_OPENERS = ["honestly", "by the way", "oh and", "so", "anyway", "you know", "actually", "well"]
CHATTER_TOPICS = [
    "my camera battery is almost dead", "the link is in the description", "we just moved to a new house",
    "my dog keeps barking outside", "this is my third video this week", "thank you all for ten thousand subscribers",
    "i'll do a q and a soon", "my sister is visiting this weekend", "i'm using a new microphone today",
    "comment below if you have questions", "it has been raining all day", "i always play music while i cook",
]
#: chatter that names an ingredient without showing it (``chatter_mentions_prob``)
MENTION_TEMPLATES = [
    "my grandmother always loved {o}", "i bought this {o} at the market yesterday", "{o} is so expensive these days",
    "my kids don't like {o} at all", "i used to hate {o} as a kid",
]
INTRO = "today i'm going to show you how to make {task}"
