"""Row builders shared by tests."""


def good_row(**changes):
    row = {
        "problem_id": 7,
        "problem": "Which way does the red square move?",
        "data_type": "video",
        "problem_type": "multiple choice",
        "options": ["A. left", "B. right", "C. up", "D. down"],
        "process": "<think>It starts at the left and ends at the right.</think>",
        "solution": "<answer>B</answer>",
        "path": "./videos/000007.mp4",
        "data_source": "synthetic/direction",
    }
    row.update(changes)
    return row
