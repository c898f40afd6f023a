from services.shared.migrate import run_env

run_env()
