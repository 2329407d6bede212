"""gpu_agent"""
