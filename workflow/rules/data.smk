# placeholder: owned by the data/features stage
STAGE_TARGETS["data"] = []
