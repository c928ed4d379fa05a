from stembot.config import env_example

print(env_example(), end="")
